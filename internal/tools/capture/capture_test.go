package capture

import (
	"bytes"
	"errors"
	"io"
	"path/filepath"
	"testing"
)

func TestRoundTrip(t *testing.T) {
	path := filepath.Join(t.TempDir(), "c.zst")
	w, err := Create(path)
	if err != nil {
		t.Fatal(err)
	}
	want := [][]byte{[]byte("a"), {}, bytes.Repeat([]byte{7}, 100000)}
	for _, f := range want {
		if err := w.Write(f); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	got, err := ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(want) {
		t.Fatalf("got %d frames", len(got))
	}
	for i := range want {
		if !bytes.Equal(got[i], want[i]) {
			t.Fatalf("frame %d differs", i)
		}
	}
}

func TestTruncated(t *testing.T) {
	var buf bytes.Buffer
	w, _ := NewWriter(&buf)
	_ = w.Write([]byte("hello world"))
	_ = w.Close()
	// a stream cut inside a frame body is an error, not a clean EOF
	var cut bytes.Buffer
	zw, _ := NewWriter(&cut)
	_, _ = zw.zw.Write([]byte{11, 0, 0, 0, 'h', 'e'})
	_ = zw.Close()
	r, _ := NewReader(&cut)
	if _, err := r.Next(); err == nil || errors.Is(err, io.EOF) {
		t.Fatalf("truncated frame: err = %v", err)
	}
}
