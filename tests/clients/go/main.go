// Go's standard net/http client calling the gateway's OpenAI route, as a Go service would without an SDK
// (tests/clients/test_clients.py runs it with Debian's golang-go).
//
//	go run . '{"base": "http://127.0.0.1:PORT", "key": "...", "model": "...", "texts": [...], "query": "..."}'
//
// Prints {"documents": [[...], ...], "query": [...]} as JSON on stdout.
package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"time"
)

type args struct {
	Base  string   `json:"base"`
	Key   string   `json:"key"`
	Model string   `json:"model"`
	Texts []string `json:"texts"`
	Query string   `json:"query"`
}

type embeddingResponse struct {
	Data []struct {
		Index     int       `json:"index"`
		Embedding []float32 `json:"embedding"`
	} `json:"data"`
}

func embed(client *http.Client, a args, input interface{}) ([][]float32, error) {
	body, err := json.Marshal(map[string]interface{}{"model": a.Model, "input": input})
	if err != nil {
		return nil, err
	}
	req, err := http.NewRequest(http.MethodPost, a.Base+"/v1/embeddings", bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+a.Key)
	resp, err := client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("status %d: %s", resp.StatusCode, raw)
	}
	var out embeddingResponse
	if err := json.Unmarshal(raw, &out); err != nil {
		return nil, err
	}
	vectors := make([][]float32, len(out.Data))
	for _, d := range out.Data {
		vectors[d.Index] = d.Embedding
	}
	return vectors, nil
}

func run() error {
	var a args
	if len(os.Args) != 2 {
		return fmt.Errorf("usage: go run . JSON")
	}
	if err := json.Unmarshal([]byte(os.Args[1]), &a); err != nil {
		return err
	}
	client := &http.Client{Timeout: 30 * time.Second}
	docs, err := embed(client, a, a.Texts)
	if err != nil {
		return err
	}
	query, err := embed(client, a, a.Query)
	if err != nil {
		return err
	}
	return json.NewEncoder(os.Stdout).Encode(map[string]interface{}{"documents": docs, "query": query[0]})
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
