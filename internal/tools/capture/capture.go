// Package capture reads and writes stream captures in the corpus format:
// zstd of a sequence of `[u32 little-endian length][frame bytes]`, each frame
// exactly as it came off the websocket.
package capture

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/klauspost/compress/zstd"
)

// MaxFrame bounds one frame read back from a capture.
const MaxFrame = 64 << 20

// Writer appends frames to a capture. Close flushes it.
type Writer struct {
	f   io.Closer
	zw  *zstd.Encoder
	n   int
	err error
}

// Create starts a capture file at path.
func Create(path string) (*Writer, error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, fmt.Errorf("capture: create: %w", err)
	}
	w, err := NewWriter(f)
	if err != nil {
		f.Close()
		return nil, err
	}
	w.f = f
	return w, nil
}

// NewWriter writes a capture to w.
func NewWriter(w io.Writer) (*Writer, error) {
	zw, err := zstd.NewWriter(w)
	if err != nil {
		return nil, fmt.Errorf("capture: zstd: %w", err)
	}
	return &Writer{zw: zw}, nil
}

// Write appends one frame.
func (w *Writer) Write(frame []byte) error {
	if w.err != nil {
		return w.err
	}
	var hdr [4]byte
	binary.LittleEndian.PutUint32(hdr[:], uint32(len(frame)))
	if _, err := w.zw.Write(hdr[:]); err != nil {
		w.err = fmt.Errorf("capture: write: %w", err)
		return w.err
	}
	if _, err := w.zw.Write(frame); err != nil {
		w.err = fmt.Errorf("capture: write: %w", err)
		return w.err
	}
	w.n++
	return nil
}

// Frames is the number of frames written.
func (w *Writer) Frames() int { return w.n }

// Close flushes the stream and closes the file if Create opened it.
func (w *Writer) Close() error {
	err := w.zw.Close()
	if w.f != nil {
		if cerr := w.f.Close(); err == nil {
			err = cerr
		}
	}
	if err != nil {
		return fmt.Errorf("capture: close: %w", err)
	}
	return w.err
}

// Reader reads frames from a capture.
type Reader struct {
	zr *zstd.Decoder
	br *bufio.Reader
}

// NewReader reads a capture from r.
func NewReader(r io.Reader) (*Reader, error) {
	zr, err := zstd.NewReader(r)
	if err != nil {
		return nil, fmt.Errorf("capture: zstd: %w", err)
	}
	return &Reader{zr: zr, br: bufio.NewReaderSize(zr, 256<<10)}, nil
}

// Next returns the next frame, or io.EOF after the last one.
func (r *Reader) Next() ([]byte, error) {
	var hdr [4]byte
	if _, err := io.ReadFull(r.br, hdr[:]); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, io.EOF
		}
		return nil, fmt.Errorf("capture: frame length: %w", err)
	}
	n := binary.LittleEndian.Uint32(hdr[:])
	if n > MaxFrame {
		return nil, fmt.Errorf("capture: frame of %d bytes is over the %d limit", n, MaxFrame)
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(r.br, b); err != nil {
		return nil, fmt.Errorf("capture: frame body: %w", err)
	}
	return b, nil
}

// Close releases the decoder.
func (r *Reader) Close() { r.zr.Close() }

// ReadFile loads every frame of a capture file.
func ReadFile(path string) ([][]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("capture: open: %w", err)
	}
	defer f.Close()
	r, err := NewReader(f)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	var out [][]byte
	for {
		b, err := r.Next()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, err
		}
		out = append(out, b)
	}
}
