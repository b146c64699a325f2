// A client written as a Java user would: the JDK's java.net.http.HttpClient with its defaults (it offers
// an h2c upgrade on plain http://), posting JSON to the gateway's OpenAI route with a team key.
// Usage: java EmbedClient.java BASE_URL KEY MODEL TEXT
// Prints one line per request: the HTTP status, a tab, the response body.
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;

public class EmbedClient {
    static String quote(String s) {
        return "\"" + s.replace("\\", "\\\\").replace("\"", "\\\"") + "\"";
    }

    public static void main(String[] args) throws Exception {
        String base = args[0], key = args[1], model = args[2], text = args[3];
        HttpClient client = HttpClient.newHttpClient();  // defaults: HTTP_2 preferred, so an h2c offer
        String[] models = {model, "no-such-model"};
        for (String m : models) {
            String body = "{\"model\": " + quote(m) + ", \"input\": [" + quote(text) + "], \"encoding_format\": \"float\"}";
            HttpRequest request = HttpRequest.newBuilder(URI.create(base + "/v1/embeddings"))
                .header("Authorization", "Bearer " + key)
                .header("Content-Type", "application/json")
                .POST(HttpRequest.BodyPublishers.ofString(body))
                .build();
            HttpResponse<String> response = client.send(request, HttpResponse.BodyHandlers.ofString());
            System.out.println(response.statusCode() + "\t" + response.version() + "\t" + response.body());
        }
    }
}
