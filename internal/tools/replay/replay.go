// Package replay serves a stream capture over a real websocket as a PDS's
// com.atproto.sync.subscribeRepos, at full speed, optionally looping it:
// each loop rewrites the frames' seq numbers in place (seq + loop × span), so
// a short capture can stand for a long stream. A cursor is honoured
// (exclusive), as on a PDS.
package replay

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sort"
	"strconv"
	"sync/atomic"

	"github.com/gorilla/websocket"

	"github.com/spaces-authz/spaces-authz/firehose"
)

// Frame is one frame with the position of its 8-byte seq in the bytes.
type Frame struct {
	Data   []byte
	Seq    int64
	seqOff int // offset of the big-endian uint64 seq value, -1 if none
}

// Server serves frames.
type Server struct {
	frames []Frame
	loops  int
	span   int64
	srv    *http.Server
	ln     net.Listener
	sent   atomic.Int64
}

// Prepare indexes frames: their seq and where it is encoded. Frames whose
// seq isn't an 8-byte CBOR uint (seqs below 2^32) can't be rewritten; they
// are served as they are and can't be looped.
func Prepare(raw [][]byte) ([]Frame, error) {
	out := make([]Frame, 0, len(raw))
	for _, b := range raw {
		f := Frame{Data: b, seqOff: -1}
		fr, err := firehose.DecodeFrame(b, func(string) bool { return false })
		if err == nil && fr.Event != nil {
			f.Seq = fr.Event.Seq
			// "seq" as a CBOR text string followed by an 8-byte uint (0x1b)
			if i := bytes.Index(b, []byte{0x63, 's', 'e', 'q', 0x1b}); i >= 0 {
				f.seqOff = i + 5
			}
		}
		out = append(out, f)
	}
	return out, nil
}

// New serves frames on a loopback port, loops times (at least once).
func New(frames []Frame, loops int, addr string) (*Server, error) {
	if loops < 1 {
		loops = 1
	}
	if len(frames) == 0 {
		return nil, errors.New("replay: no frames")
	}
	first, last := frames[0].Seq, frames[len(frames)-1].Seq
	if loops > 1 {
		for _, f := range frames {
			if f.Seq != 0 && f.seqOff < 0 {
				return nil, fmt.Errorf("replay: frame seq %d is not 8-byte encoded: can't loop", f.Seq)
			}
		}
	}
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("replay: listen: %w", err)
	}
	s := &Server{frames: frames, loops: loops, span: last - first + 1, ln: ln}
	mux := http.NewServeMux()
	mux.HandleFunc("/xrpc/com.atproto.sync.subscribeRepos", s.serve)
	s.srv = &http.Server{Handler: mux}
	go func() { _ = s.srv.Serve(ln) }()
	return s, nil
}

// URL is the http base URL.
func (s *Server) URL() string { return "http://" + s.ln.Addr().String() }

// Total is the number of frames one full replay sends.
func (s *Server) Total() int { return len(s.frames) * s.loops }

// LastSeq is the seq of the last frame of the last loop.
func (s *Server) LastSeq() int64 {
	return s.frames[len(s.frames)-1].Seq + int64(s.loops-1)*s.span
}

// Sent counts frames written to clients.
func (s *Server) Sent() int64 { return s.sent.Load() }

// Close stops the server.
func (s *Server) Close() error { return s.srv.Close() }

var upgrader = websocket.Upgrader{ReadBufferSize: 1024, WriteBufferSize: 256 << 10}

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	cursor := int64(-1)
	if c := r.URL.Query().Get("cursor"); c != "" {
		v, err := strconv.ParseInt(c, 10, 64)
		if err != nil {
			http.Error(w, "bad cursor", http.StatusBadRequest)
			return
		}
		cursor = v
	}
	conn, err := upgrader.Upgrade(w, r, nil)
	if err != nil {
		return
	}
	defer conn.Close()
	gone := make(chan struct{})
	go func() { // answer pings, notice the client leaving
		defer close(gone)
		for {
			if _, _, err := conn.NextReader(); err != nil {
				return
			}
		}
	}()
	// Frames are encoded as websocket messages into a batch that goes out
	// in one write when it passes batchBytes: one syscall per frame would
	// make the server, not the consumer under test, the bottleneck. Each
	// write carries whole messages, so a pong that gorilla writes between
	// two batches (net.Conn writes don't interleave) keeps the stream valid.
	nc := conn.NetConn()
	batch := make([]byte, 0, 2*batchBytes)
	pending := 0
	flush := func() bool {
		if len(batch) == 0 {
			return true
		}
		if _, err := nc.Write(batch); err != nil {
			return false
		}
		s.sent.Add(int64(pending))
		batch, pending = batch[:0], 0
		return true
	}
	for loop := 0; loop < s.loops; loop++ {
		off := int64(loop) * s.span
		start := 0
		if cursor >= 0 {
			start = sort.Search(len(s.frames), func(i int) bool { return s.frames[i].Seq+off > cursor })
		}
		for _, f := range s.frames[start:] {
			batch = appendBinaryMessage(batch, f.Data)
			if loop > 0 && f.seqOff >= 0 {
				payload := batch[len(batch)-len(f.Data):]
				binary.BigEndian.PutUint64(payload[f.seqOff:], uint64(f.Seq+off))
			}
			pending++
			if len(batch) >= batchBytes && !flush() {
				return
			}
		}
	}
	if !flush() {
		return
	}
	// Stay open like a live PDS with nothing new.
	<-gone
}

// batchBytes is how much the server buffers before a write.
const batchBytes = 256 << 10

// appendBinaryMessage appends p as one unmasked, final binary websocket
// frame (RFC 6455 §5.2), as a server sends it.
func appendBinaryMessage(b, p []byte) []byte {
	b = append(b, 0x82)
	switch n := len(p); {
	case n < 126:
		b = append(b, byte(n))
	case n <= 0xffff:
		b = append(b, 126, byte(n>>8), byte(n))
	default:
		b = append(b, 127)
		b = binary.BigEndian.AppendUint64(b, uint64(n))
	}
	return append(b, p...)
}
