package httpapi_test

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/spaces-authz/spaces-authz/internal/pipeline"
)

// fakeSource is a consumer whose answers the test sets.
type fakeSource struct {
	mu        sync.Mutex
	snap      pipeline.Snapshot
	resynced  [][]string
	resyncErr error
	// entered receives a value when a WaitApplied starts; release ends
	// every wait (closed by the test).
	entered chan struct{}
	release chan struct{}
}

func newFake() *fakeSource {
	return &fakeSource{entered: make(chan struct{}, 64), release: make(chan struct{}),
		snap: pipeline.Snapshot{Started: time.Now()}}
}

func (f *fakeSource) Snapshot() pipeline.Snapshot {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.snap
}

func (f *fakeSource) WaitApplied(ctx context.Context, _, _ string) (string, error) {
	f.entered <- struct{}{}
	select {
	case <-f.release:
		return "zedtoken", nil
	case <-ctx.Done():
		return "", ctx.Err()
	}
}

func (f *fakeSource) Resync(_ context.Context, dids []string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.resyncErr != nil {
		return f.resyncErr
	}
	f.resynced = append(f.resynced, dids)
	return nil
}

func (f *fakeSource) resyncs() [][]string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([][]string(nil), f.resynced...)
}

var errResync = errors.New("resync failed")
