package fakepds

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	comatproto "github.com/bluesky-social/indigo/api/atproto"
	"github.com/gorilla/websocket"
)

// Server is a scriptable PDS: a websocket subscribeRepos endpoint backed by
// an in-memory event log, and getRepo/listRepos over the current repos.
type Server struct {
	srv *httptest.Server

	mu       sync.Mutex
	repos    map[string]*Repo
	accounts map[string]account
	log      []entry
	seq      int64
	oldest   int64 // events with seq < oldest were trimmed
	changed  chan struct{}
	conns    map[*websocket.Conn]struct{}
	dials    int
	cursors  []string
	cutNext  bool
	refuse   bool
	repoHook func(did string) error
	listHook func(dids []string)
	now      func() time.Time
}

type account struct {
	active bool
	status string
}

type entry struct {
	seq      int64 // 0 for unsequenced injections
	frame    []byte
	liveOnly bool // delivered only to connections open when it was added
	index    int
	closeOut bool // close connections after sending
}

// New starts a fake PDS on a loopback port; it is closed with the test.
func New(t testing.TB) *Server {
	t.Helper()
	s := NewServer()
	t.Cleanup(s.Close)
	return s
}

// NewServer starts a fake PDS; the caller closes it.
func NewServer() *Server {
	s := &Server{repos: map[string]*Repo{}, accounts: map[string]account{}, changed: make(chan struct{}),
		conns: map[*websocket.Conn]struct{}{}, now: time.Now}
	mux := http.NewServeMux()
	mux.HandleFunc("/xrpc/com.atproto.sync.subscribeRepos", s.handleSubscribe)
	mux.HandleFunc("/xrpc/com.atproto.sync.getRepo", s.handleGetRepo)
	mux.HandleFunc("/xrpc/com.atproto.sync.listRepos", s.handleListRepos)
	s.srv = httptest.NewServer(mux)
	return s
}

// URL is the server's http:// base URL.
func (s *Server) URL() string { return s.srv.URL }

// Close drops every connection and stops the server.
func (s *Server) Close() {
	s.Drop()
	s.srv.CloseClientConnections()
	s.srv.Close()
}

// Head is the newest seq.
func (s *Server) Head() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.seq
}

// Dials counts subscribeRepos connections made so far.
func (s *Server) Dials() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.dials
}

// Cursors lists the cursor parameter of every connection ("" for none).
func (s *Server) Cursors() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.cursors...)
}

// Repo returns an account's repo.
func (s *Server) Repo(did string) *Repo {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.repos[did]
}

// DIDs lists the accounts, sorted.
func (s *Server) DIDs() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]string, 0, len(s.repos))
	for d := range s.repos {
		out = append(out, d)
	}
	sort.Strings(out)
	return out
}

// SetListHook makes listRepos call fn with the DIDs of the page it has
// computed, before it answers (fn may block: a listing taken now and
// delivered later).
func (s *Server) SetListHook(fn func(dids []string)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.listHook = fn
}

// SetRepoHook makes getRepo call fn first; a non-nil error is answered as
// HTTP 500 (to test retries).
func (s *Server) SetRepoHook(fn func(did string) error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.repoHook = fn
}

func (s *Server) timestamp() string { return s.now().UTC().Format(time.RFC3339Nano) }

// appendLocked adds a sequenced frame built by mk(seq) to the log.
func (s *Server) appendLocked(mk func(seq int64) ([]byte, error)) (int64, error) {
	seq := s.seq + 1
	f, err := mk(seq)
	if err != nil {
		return 0, err
	}
	s.seq = seq
	s.log = append(s.log, entry{seq: seq, frame: f, index: len(s.log)})
	s.notifyLocked()
	return seq, nil
}

func (s *Server) notifyLocked() {
	close(s.changed)
	s.changed = make(chan struct{})
}

// CreateAccount adds an account the way the reference PDS announces one:
// #identity, #account active, an empty #commit, then #sync (4 seqs). name
// is either a full DID or a name turned into a did:plc with PLCDID.
func (s *Server) CreateAccount(name string) (*Repo, error) {
	did := name
	if len(name) < 4 || name[:4] != "did:" {
		did = PLCDID(name)
	}
	r, err := NewRepo(did)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	if _, dup := s.repos[did]; dup {
		s.mu.Unlock()
		return nil, fmt.Errorf("fakepds: account %s exists", did)
	}
	s.repos[did] = r
	s.accounts[did] = account{active: true}
	s.mu.Unlock()
	if _, err := s.Identity(did, name+".test"); err != nil {
		return nil, err
	}
	if _, err := s.Account(did, true, ""); err != nil {
		return nil, err
	}
	if _, _, err := s.Commit(did); err != nil {
		return nil, err
	}
	if _, err := s.Sync(did); err != nil {
		return nil, err
	}
	return r, nil
}

// Import takes in an account that moves here from another PDS, the way
// the reference PDS does in a migration: createAccount with the existing
// DID makes it deactivated (#identity, #account inactive), importRepo
// brings its records (one commit here, not on the stream); Activate then
// makes it active.
func (s *Server) Import(did string, records map[string]map[string]any) (*Repo, error) {
	r, err := NewRepo(did)
	if err != nil {
		return nil, err
	}
	var writes []Write
	for path, v := range records {
		coll, rkey, _ := strings.Cut(path, "/")
		writes = append(writes, Write{Action: "create", Collection: coll, RKey: rkey, Value: v})
	}
	sort.Slice(writes, func(i, j int) bool { return writes[i].Path() < writes[j].Path() })
	if _, err := r.Apply(writes...); err != nil {
		return nil, err
	}
	s.mu.Lock()
	if _, dup := s.repos[did]; dup {
		s.mu.Unlock()
		return nil, fmt.Errorf("fakepds: account %s exists", did)
	}
	s.repos[did] = r
	s.mu.Unlock()
	if _, err := s.Identity(did, did+".test"); err != nil {
		return nil, err
	}
	if _, err := s.Account(did, false, "deactivated"); err != nil {
		return nil, err
	}
	return r, nil
}

// Activate makes an imported account active: #account active, then #sync.
func (s *Server) Activate(did string) error {
	if _, err := s.Account(did, true, ""); err != nil {
		return err
	}
	_, err := s.Sync(did)
	return err
}

// Commit applies writes to did's repo as one signed commit and emits it.
// With no writes it emits an empty commit.
func (s *Server) Commit(did string, writes ...Write) (*Commit, int64, error) {
	r := s.Repo(did)
	if r == nil {
		return nil, 0, fmt.Errorf("fakepds: commit: no account %s", did)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	c, err := r.Apply(writes...)
	if err != nil {
		return nil, 0, err
	}
	seq, err := s.appendLocked(func(seq int64) ([]byte, error) { return CommitFrame(c, seq, s.timestamp()) })
	return c, seq, err
}

// CommitSilently applies writes without emitting the event, as if the
// stream lost it: the next commit's `since` then names a rev the consumer
// never saw (a gap).
func (s *Server) CommitSilently(did string, writes ...Write) (*Commit, error) {
	r := s.Repo(did)
	if r == nil {
		return nil, fmt.Errorf("fakepds: commit: no account %s", did)
	}
	return r.Apply(writes...)
}

// Sync emits a #sync for did's current state.
func (s *Server) Sync(did string) (int64, error) {
	r := s.Repo(did)
	if r == nil {
		return 0, fmt.Errorf("fakepds: sync: no account %s", did)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	blocks, rev, err := r.SyncBlocks()
	if err != nil {
		return 0, err
	}
	return s.appendLocked(func(seq int64) ([]byte, error) {
		return EncodeFrame("#sync", &comatproto.SyncSubscribeRepos_Sync{Did: did, Rev: rev, Seq: seq,
			Time: s.timestamp(), Blocks: blocks})
	})
}

// Identity emits an #identity event.
func (s *Server) Identity(did, handle string) (int64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.appendLocked(func(seq int64) ([]byte, error) {
		h := handle
		return EncodeFrame("#identity", &comatproto.SyncSubscribeRepos_Identity{Did: did, Handle: &h, Seq: seq,
			Time: s.timestamp()})
	})
}

// Account emits an #account event and sets the account's status, which
// getRepo and listRepos then report. Status "deleted" removes the repo.
func (s *Server) Account(did string, active bool, status string) (int64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.accounts[did] = account{active: active, status: status}
	if status == "deleted" {
		delete(s.repos, did)
	}
	return s.appendLocked(func(seq int64) ([]byte, error) {
		msg := &comatproto.SyncSubscribeRepos_Account{Did: did, Active: active, Seq: seq, Time: s.timestamp()}
		if status != "" {
			st := status
			msg.Status = &st
		}
		return EncodeFrame("#account", msg)
	})
}

// Inject sends a raw frame to the connections open now (never replayed).
func (s *Server) Inject(frame []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.log = append(s.log, entry{frame: frame, liveOnly: true, index: len(s.log)})
	s.notifyLocked()
}

// InjectSequenced appends a raw frame that claims a new seq (built by mk)
// to the log, so it is replayed like any event: for malformed bodies that
// still carry a seq.
func (s *Server) InjectSequenced(mk func(seq int64) ([]byte, error)) (int64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.appendLocked(mk)
}

// Info sends an #info message to the connections open now.
func (s *Server) Info(name, message string) error {
	m := message
	f, err := EncodeFrame("#info", &comatproto.SyncSubscribeRepos_Info{Name: name, Message: &m})
	if err != nil {
		return err
	}
	s.Inject(f)
	return nil
}

// ErrorFrame sends an error frame to the connections open now and then
// closes them, as a PDS does.
func (s *Server) ErrorFrame(name, message string) error {
	f, err := EncodeErrorFrame(name, message)
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.log = append(s.log, entry{frame: f, liveOnly: true, index: len(s.log), closeOut: true})
	s.notifyLocked()
	return nil
}

// CutNext makes the next frame sent on every open connection stop halfway,
// after which the connection is closed (the event stays in the log and is
// replayed on reconnect).
func (s *Server) CutNext() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.cutNext = true
}

// Drop closes every open stream connection.
func (s *Server) Drop() {
	s.mu.Lock()
	conns := make([]*websocket.Conn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	for _, c := range conns {
		_ = c.UnderlyingConn().Close()
	}
}

// Refuse makes new stream connections fail with HTTP 503 while on (a PDS
// that is down); Drop then cuts the open ones.
func (s *Server) Refuse(on bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.refuse = on
}

// Trim forgets events with seq below before; a cursor older than that gets
// #info OutdatedCursor and a replay from the oldest event kept.
func (s *Server) Trim(before int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.oldest = before
}

var upgrader = websocket.Upgrader{ReadBufferSize: 1024, WriteBufferSize: 512}

func (s *Server) handleSubscribe(w http.ResponseWriter, r *http.Request) {
	cursorParam := r.URL.Query().Get("cursor")
	// A live connection starts at the log's end as of the request, taken
	// before the handshake completes: the client may write the moment it
	// sees the connection up, and that event must reach it.
	s.mu.Lock()
	liveStart, refuse := len(s.log), s.refuse
	s.mu.Unlock()
	if refuse {
		xrpcError(w, http.StatusServiceUnavailable, "Unavailable", "the PDS is down")
		return
	}
	conn, err := upgrader.Upgrade(w, r, nil)
	if err != nil {
		return
	}
	defer conn.Close()
	closed := make(chan struct{})
	go func() {
		defer close(closed)
		for {
			if _, _, err := conn.NextReader(); err != nil {
				return
			}
		}
	}()

	s.mu.Lock()
	s.dials++
	s.cursors = append(s.cursors, cursorParam)
	s.conns[conn] = struct{}{}
	liveStart = min(liveStart, len(s.log)) // a Trim in between shortened the log
	liveFrom := liveStart
	start := liveStart
	var pre [][]byte
	if cursorParam != "" {
		cursor, err := strconv.ParseInt(cursorParam, 10, 64)
		switch {
		case err != nil || cursor > s.seq:
			s.mu.Unlock()
			f, _ := EncodeErrorFrame("FutureCursor", "Cursor in the future.")
			_ = conn.WriteMessage(websocket.BinaryMessage, f)
			_ = conn.WriteControl(websocket.CloseMessage,
				websocket.FormatCloseMessage(websocket.ClosePolicyViolation, "FutureCursor"), time.Now().Add(time.Second))
			s.forget(conn)
			return
		case s.oldest > 0 && cursor < s.oldest-1:
			m := "Requested cursor exceeded limit. Possibly missing events"
			f, _ := EncodeFrame("#info", &comatproto.SyncSubscribeRepos_Info{Name: "OutdatedCursor", Message: &m})
			pre = append(pre, f)
		}
		start = sort.Search(len(s.log), func(i int) bool { return s.log[i].seq > cursor })
	}
	s.mu.Unlock()
	defer s.forget(conn)

	for _, f := range pre {
		if err := conn.WriteMessage(websocket.BinaryMessage, f); err != nil {
			return
		}
	}
	idx := start
	for {
		s.mu.Lock()
		for idx >= len(s.log) {
			ch := s.changed
			s.mu.Unlock()
			select {
			case <-ch:
			case <-closed:
				return
			}
			s.mu.Lock()
		}
		batch := append([]entry(nil), s.log[idx:]...)
		idx = len(s.log)
		oldest := s.oldest
		cut := s.cutNext
		s.cutNext = false
		s.mu.Unlock()
		for _, e := range batch {
			if e.liveOnly && e.index < liveFrom {
				continue
			}
			if e.seq > 0 && e.seq < oldest {
				continue
			}
			if cut {
				writeHalf(conn, e.frame)
				return
			}
			_ = conn.SetWriteDeadline(time.Now().Add(30 * time.Second))
			if err := conn.WriteMessage(websocket.BinaryMessage, e.frame); err != nil {
				return
			}
			if e.closeOut {
				_ = conn.WriteControl(websocket.CloseMessage,
					websocket.FormatCloseMessage(websocket.ClosePolicyViolation, ""), time.Now().Add(time.Second))
				return
			}
		}
	}
}

// writeHalf starts a binary message, flushes half of it and kills the TCP
// connection: the client sees a frame cut in the middle.
func writeHalf(conn *websocket.Conn, frame []byte) {
	w, err := conn.NextWriter(websocket.BinaryMessage)
	if err == nil {
		pad := frame
		for len(pad) < 4096 { // more than the write buffer, so bytes go out
			pad = append(pad, frame...)
		}
		_, _ = w.Write(pad[:len(pad)/2])
	}
	if tc, ok := conn.UnderlyingConn().(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	_ = conn.UnderlyingConn().Close()
}

func (s *Server) forget(c *websocket.Conn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.conns, c)
}

func xrpcError(w http.ResponseWriter, status int, name, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]string{"error": name, "message": msg})
}

func (s *Server) handleGetRepo(w http.ResponseWriter, r *http.Request) {
	did := r.URL.Query().Get("did")
	s.mu.Lock()
	repo, acct, hook := s.repos[did], s.accounts[did], s.repoHook
	s.mu.Unlock()
	if hook != nil {
		if err := hook(did); err != nil {
			xrpcError(w, http.StatusInternalServerError, "InternalServerError", err.Error())
			return
		}
	}
	if repo == nil {
		xrpcError(w, http.StatusBadRequest, "RepoNotFound", "Could not find repo for DID: "+did)
		return
	}
	if !acct.active {
		switch acct.status {
		case "takendown":
			xrpcError(w, http.StatusBadRequest, "RepoTakendown", "Repo has been takendown: "+did)
		case "suspended":
			xrpcError(w, http.StatusBadRequest, "RepoSuspended", "Repo has been suspended: "+did)
		default:
			xrpcError(w, http.StatusBadRequest, "RepoDeactivated", "Repo has been deactivated: "+did)
		}
		return
	}
	car, err := repo.Export()
	if err != nil {
		xrpcError(w, http.StatusInternalServerError, "InternalServerError", err.Error())
		return
	}
	w.Header().Set("Content-Type", "application/vnd.ipld.car")
	_, _ = w.Write(car)
}

func (s *Server) handleListRepos(w http.ResponseWriter, r *http.Request) {
	limit, _ := strconv.Atoi(r.URL.Query().Get("limit"))
	if limit <= 0 || limit > 1000 {
		limit = 500
	}
	after := r.URL.Query().Get("cursor")
	type repoOut struct {
		DID    string `json:"did"`
		Head   string `json:"head"`
		Rev    string `json:"rev"`
		Active bool   `json:"active"`
		Status string `json:"status,omitempty"`
	}
	var out struct {
		Cursor string    `json:"cursor,omitempty"`
		Repos  []repoOut `json:"repos"`
	}
	out.Repos = []repoOut{}
	for _, did := range s.DIDs() {
		if did <= after {
			continue
		}
		s.mu.Lock()
		repo, acct := s.repos[did], s.accounts[did]
		s.mu.Unlock()
		if repo == nil {
			continue
		}
		ro := repoOut{DID: did, Rev: repo.Rev(), Active: acct.active, Status: acct.status}
		if h := repo.headCID(); h != "" {
			ro.Head = h
		}
		out.Repos = append(out.Repos, ro)
		if len(out.Repos) == limit {
			out.Cursor = did
			break
		}
	}
	s.mu.Lock()
	hook := s.listHook
	s.mu.Unlock()
	if hook != nil {
		dids := make([]string, len(out.Repos))
		for i, r := range out.Repos {
			dids[i] = r.DID
		}
		hook(dids)
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(out)
}

// ErrStopped is returned by helpers once the server is closed.
var ErrStopped = errors.New("fakepds: stopped")

// WaitConnections blocks until at least n stream connections were made.
func (s *Server) WaitConnections(ctx context.Context, n int) error {
	for {
		if s.Dials() >= n {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// Forget removes an account's repo without any event, as if the PDS had
// lost it: listRepos stops listing it and getRepo answers RepoNotFound.
func (s *Server) Forget(did string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.repos, did)
	delete(s.accounts, did)
}
