package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"time"
)

// waitConsistent asks the consumer's /v1/consistency endpoint for the
// ZedToken that covers a repo rev, as an app does after a write.
func waitConsistent(ctx context.Context, httpAddr, did, rev string) (string, time.Duration, error) {
	start := time.Now()
	q := url.Values{"did": {did}, "rev": {rev}, "timeout": {"5s"}}
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+httpAddr+"/v1/consistency?"+q.Encode(), nil)
		if err != nil {
			return "", 0, err
		}
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			var body struct {
				ZedToken string `json:"zedtoken"`
				Error    string `json:"error"`
			}
			_ = json.NewDecoder(resp.Body).Decode(&body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return body.ZedToken, time.Since(start), nil
			}
			if time.Since(start) > 60*time.Second {
				return "", 0, fmt.Errorf("consistency: HTTP %d: %s", resp.StatusCode, body.Error)
			}
		}
		select {
		case <-ctx.Done():
			return "", 0, ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// waitReady waits until the consumer's /readyz answers 200 (its first run's
// rebuild is committed), for at most limit.
func waitReady(ctx context.Context, httpAddr string, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+httpAddr+"/readyz", nil)
		if err != nil {
			return err
		}
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = fmt.Errorf("HTTP %d", resp.StatusCode)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the consumer is not ready after %v: %w", limit, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}
