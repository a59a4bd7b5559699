package httpapi_test

import (
	"fmt"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/spaces-authz/spaces-authz/internal/httpapi"
	"github.com/spaces-authz/spaces-authz/internal/pipeline"
	"github.com/spaces-authz/spaces-authz/internal/testrig/testenv"
)

// TestScrapeWhileRunningRace: /metrics and /v1/status scraped in a loop
// while the consumer applies a stream of commits and the link drops and
// comes back (run with -race). Lag is computed at scrape time from state
// the reader, the lanes and the tracker write.
func TestScrapeWhileRunningRace(t *testing.T) {
	e := testenv.New(t)
	alice := testenv.Must(e.PDS.CreateAccount("alice")).DID()
	reg := registry()
	r := e.Start(func(c *pipeline.Config) { c.Registry = reg })
	srv := httptest.NewServer(handler(t, httpapi.Config{Source: r.Consumer, Gatherer: reg}))
	defer srv.Close()
	e.WaitCaughtUp(r)

	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				if code, body := get(t, srv.URL+"/metrics"); code != 200 {
					t.Errorf("/metrics %d: %s", code, body)
					return
				}
				if code, body := get(t, srv.URL+"/v1/status"); code != 200 {
					t.Errorf("/v1/status %d: %s", code, body)
					return
				}
			}
		}()
	}
	for i := range 40 {
		if _, _, err := e.PDS.Commit(alice, testenv.Space("create", fmt.Sprintf("s%d", i), false)); err != nil {
			t.Fatal(err)
		}
		if i%10 == 5 {
			e.PDS.Drop()
		}
		time.Sleep(10 * time.Millisecond)
	}
	e.WaitCaughtUp(r)
	close(stop)
	wg.Wait()
}
