// Java's default java.net.http.HttpClient calling the gateway's OpenAI route, as a Java service would without
// an SDK (tests/clients/test_clients.py runs it as a single-file program: `java Embed.java BASE KEY BODY...`). The
// default client offers HTTP/2 (an `Upgrade: h2c` header on plain HTTP), which the gateway must answer as
// HTTP/1.1 with the body read. Prints a JSON array of the answers' bodies; exits 1 on a status other than 200.
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;

public class Embed {
    public static void main(String[] args) throws Exception {
        String base = args[0];
        String key = args[1];
        HttpClient client = HttpClient.newHttpClient();  // the defaults: HTTP/2 offered, redirects never
        List<String> bodies = new ArrayList<>();
        for (int i = 2; i < args.length; i++) {
            HttpRequest request = HttpRequest.newBuilder(URI.create(base + "/v1/embeddings"))
                .timeout(Duration.ofSeconds(30))
                .header("Content-Type", "application/json")
                .header("Authorization", "Bearer " + key)
                .POST(HttpRequest.BodyPublishers.ofString(args[i]))
                .build();
            HttpResponse<String> response = client.send(request, HttpResponse.BodyHandlers.ofString());
            if (response.statusCode() != 200) {
                System.err.println("status " + response.statusCode() + ": " + response.body());
                System.exit(1);
            }
            bodies.add(response.body());
        }
        System.out.print("[" + String.join(",", bodies) + "]");
    }
}
