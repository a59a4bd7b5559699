//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	v1 "github.com/authzed/authzed-go/proto/authzed/api/v1"
	indigorepo "github.com/bluesky-social/indigo/atproto/repo"
	"github.com/ipfs/go-cid"

	"github.com/spaces-authz/spaces-authz/internal/httpapi"
	"github.com/spaces-authz/spaces-authz/internal/testrig/localpds"
	"github.com/spaces-authz/spaces-authz/internal/testrig/pgtest"
	"github.com/spaces-authz/spaces-authz/internal/testrig/procs"
	"github.com/spaces-authz/spaces-authz/internal/testrig/spicedbtest"
	"github.com/spaces-authz/spaces-authz/internal/testrig/testenv"
	"github.com/spaces-authz/spaces-authz/spice"
	"github.com/spaces-authz/spaces-authz/view"
)

const password = "e2e-password-1"

var (
	binOnce sync.Once
	binPath string
	binErr  error
	binDir  string
)

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "spaces-authz-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binDir = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func consumerBin(t testing.TB) string {
	t.Helper()
	binOnce.Do(func() { binPath, binErr = procs.BuildConsumer(binDir) })
	if binErr != nil {
		t.Fatal(binErr)
	}
	return binPath
}

// stack is one test's real PDS, SpiceDB and consumer.
type stack struct {
	t        testing.TB
	pds      *localpds.PDS
	xrpc     *localpds.Client
	sdb      *spicedbtest.Server
	client   *spice.Client
	rules    *view.Rules
	consumer *procs.Proc
	logDir   string
	accounts map[string]localpds.Session // by handle
	httpAddr string
	seen     map[string][]localpds.Record
	// pg is the stack's own PostgreSQL cluster and pgURI SpiceDB's
	// database on it, on the postgres datastore (nil and "" on memory).
	pg    *pgtest.Cluster
	pgURI string
	// source replaces `--pds-url <the PDS>` in the consumer's arguments
	// (a consumer that follows a relay, or several PDSes).
	source []string
}

type stackOpts struct {
	backfill time.Duration
	// postgres runs SpiceDB on the postgres datastore, on a PostgreSQL
	// cluster of the stack's own (so a test can restart PostgreSQL and
	// SpiceDB on the same data); the default is the memory datastore.
	postgres bool
}

// datastore names a stack's SpiceDB datastore (subtest names).
func (o stackOpts) datastore() string {
	if o.postgres {
		return "postgres"
	}
	return "memory"
}

func newStack(t testing.TB, o stackOpts) *stack {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	t0 := time.Now()
	pds, err := localpds.Start(ctx, localpds.Options{BackfillLimit: o.backfill})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = pds.Stop() })
	var (
		sdb   *spicedbtest.Server
		pg    *pgtest.Cluster
		pgURI string
	)
	if o.postgres {
		if pg, err = pgtest.Start(ctx, pgtest.Options{}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if t.Failed() {
				t.Logf("PostgreSQL log (tail):\n%s", tail(pg.Log(), 3000))
			}
			pg.Remove()
		})
		sdb, pgURI = pgtest.SpiceDBOn(t, pg) // stopped with the test
	} else {
		if sdb, err = spicedbtest.StartServe(ctx, spicedbtest.ServeOptions{}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(sdb.Stop)
	}
	logDir := t.TempDir()
	if d := os.Getenv("E2E_LOG_DIR"); d != "" { // keep the processes' logs, e.g. to study a failure
		logDir = filepath.Join(d, fmt.Sprintf("%s-%d", strings.ReplaceAll(t.Name(), "/", "_"), time.Now().UnixNano()))
		if err := os.MkdirAll(logDir, 0o755); err != nil {
			t.Fatal(err)
		}
		t.Logf("logs in %s", logDir)
	}
	s := &stack{t: t, pds: pds, xrpc: pds.Client(), sdb: sdb, rules: view.DefaultRules(), logDir: logDir,
		accounts: map[string]localpds.Session{}, seen: map[string][]localpds.Record{}, pg: pg, pgURI: pgURI}
	s.dial()
	s.cli("schema", "apply")
	t.Logf("stack up in %v: PDS %s, SpiceDB %s on %s", time.Since(t0).Round(time.Millisecond), pds.URL, sdb.Addr,
		o.datastore())
	return s
}

func (s *stack) dial() {
	c, err := spice.Dial(spice.Config{Endpoint: s.sdb.Addr, Token: s.sdb.Key, Insecure: true})
	if err != nil {
		s.t.Fatal(err)
	}
	s.t.Cleanup(func() { _ = c.Close() })
	s.client = c
}

// e2eAdminToken is the daemons' admin API token (reconcile --fix sends it).
const e2eAdminToken = "e2e-admin-token-0123456789"

func (s *stack) env() []string {
	return []string{"CONSUMER_SPICEDB_TOKEN=" + s.sdb.Key, "CONSUMER_ADMIN_TOKEN=" + e2eAdminToken}
}

func (s *stack) commonArgs() []string {
	src := []string{"--pds-url", s.pds.URL}
	if s.source != nil {
		src = s.source
	}
	return append(src, "--spicedb-endpoint", s.sdb.Addr, "--spicedb-insecure", "--log-format", "text")
}

// cli runs a one-shot consumer command and returns its output.
func (s *stack) cli(args ...string) string {
	s.t.Helper()
	p, err := procs.Start(consumerBin(s.t), append(args, s.commonArgs()...), s.env(),
		filepath.Join(s.logDir, "cli.log"), nil)
	if err != nil {
		s.t.Fatal(err)
	}
	<-p.Done()
	if err := p.ExitErr(); err != nil {
		s.t.Fatalf("consumer %v: %v\n%s", args, err, p.Output())
	}
	return p.Output()
}

// startConsumer runs `consumer run` as a process.
func (s *stack) startConsumer(extra ...string) *procs.Proc {
	s.t.Helper()
	port, err := spicedbtest.FreePort()
	if err != nil {
		s.t.Fatal(err)
	}
	s.httpAddr = fmt.Sprintf("127.0.0.1:%d", port)
	args := append([]string{"run", "--http-addr", s.httpAddr, "--takeover", "--flush-every", "50ms",
		"--heartbeat-every", "1s", "--log-level", logLevel()}, s.commonArgs()...)
	p, err := procs.Start(consumerBin(s.t), append(args, extra...), s.env(), filepath.Join(s.logDir, "consumer.log"), nil)
	if err != nil {
		s.t.Fatal(err)
	}
	s.consumer = p
	s.t.Cleanup(func() {
		if p.Running() {
			_ = p.Stop(15 * time.Second)
		}
		if s.t.Failed() {
			s.t.Logf("consumer log (tail):\n%s", tail(p.Output(), 4000))
		}
	})
	return p
}

// logLevel is the consumer's log level: info, or E2E_LOG_LEVEL (debug
// logs every event and every committed batch).
func logLevel() string {
	if l := os.Getenv("E2E_LOG_LEVEL"); l != "" {
		return l
	}
	return "info"
}

func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[len(s)-n:]
}

func (s *stack) account(handle string) localpds.Session {
	s.t.Helper()
	sess, err := s.xrpc.CreateAccount(context.Background(), handle+".test", handle+"@example.com", password)
	if err != nil {
		s.t.Fatal(err)
	}
	s.accounts[handle] = sess
	return sess
}

func (s *stack) apply(sess localpds.Session, writes ...localpds.Write) string {
	s.t.Helper()
	rev, _, err := s.xrpc.ApplyWrites(context.Background(), sess, writes)
	if err != nil {
		s.t.Fatalf("applyWrites for %s: %v", sess.Handle, err)
	}
	return rev
}

// oracle computes the relationships SpiceDB must hold from the PDS's
// current records: data of active accounts, lineage of every account that
// still exists.
//
// Records the PDS lost the block of are the exception. The reference PDS
// (@atproto/repo's DataDiff.nodeDelete) can delete a record block that a
// record created in the same commit shares (same content, same CID), and
// its listRecords hides a record without its block, while the repo's MST
// still names it. The consumer saw the content on the stream and keeps what
// it produced; for those records (lost), whatever lineage SpiceDB holds is
// accepted (see waitOracle).
func (s *stack) oracle() (data, lineage []string, lost map[string]lostRecords) {
	s.t.Helper()
	ctx := context.Background()
	dataSet := map[string]bool{}
	lost = map[string]lostRecords{}
	for _, sess := range s.accounts {
		st, err := s.xrpc.GetRepoStatus(ctx, sess.DID)
		if err != nil {
			continue // deleted
		}
		listed := map[string]bool{}
		for _, coll := range s.rules.Collections() {
			recs, err := s.listAll(sess.DID, coll, st.Active)
			if err != nil {
				s.t.Fatalf("list %s %s: %v", sess.DID, coll, err)
			}
			for _, r := range recs {
				rkey := r.URI[strings.LastIndex(r.URI, "/")+1:]
				listed[coll+"/"+rkey] = true
				tuples, err := s.rules.Project(sess.DID, coll, rkey, r.Value)
				if err != nil {
					continue
				}
				for _, t := range tuples {
					if st.Active {
						dataSet[t.String()] = true
					}
					lineage = append(lineage, view.LineageTuple(t, view.RecordID(sess.DID, coll, rkey)).String())
				}
			}
		}
		if st.Active {
			if paths := s.unlisted(sess.DID, listed); len(paths) > 0 {
				s.t.Logf("%s: the PDS lost the block of %v (its MST names them, listRecords hides them)", sess.DID, paths)
				lost[sess.DID] = lostRecords{paths: paths, active: true}
			}
		}
	}
	for d := range dataSet {
		data = append(data, d)
	}
	sort.Strings(data)
	sort.Strings(lineage)
	return data, lineage, lost
}

// lostRecords are a repo's records whose block the PDS lost.
type lostRecords struct {
	paths  map[string]bool
	active bool
}

// unlisted reads the repo's MST from getRepo (with indigo) and returns the
// paths of projected records that listRecords did not return.
func (s *stack) unlisted(did string, listed map[string]bool) map[string]bool {
	s.t.Helper()
	resp, err := http.Get(s.pds.URL + "/xrpc/com.atproto.sync.getRepo?did=" + did)
	if err != nil {
		s.t.Fatalf("getRepo %s: %v", did, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil // inactive meanwhile: nothing to learn
	}
	_, r, err := indigorepo.LoadRepoFromCAR(context.Background(), resp.Body)
	if err != nil {
		s.t.Fatalf("getRepo %s: %v", did, err)
	}
	out := map[string]bool{}
	err = r.MST.Walk(func(key []byte, _ cid.Cid) error {
		path := string(key)
		coll, _, _ := strings.Cut(path, "/")
		if s.rules.Projects(coll) && !listed[path] {
			out[path] = true
		}
		return nil
	})
	if err != nil {
		s.t.Fatalf("getRepo %s: walk: %v", did, err)
	}
	return out
}

// acceptLost adds to the expectation what SpiceDB holds for records the
// PDS lost the block of.
func (s *stack) acceptLost(lost map[string]lostRecords, wantData, wantLin []string) ([]string, []string) {
	if len(lost) == 0 {
		return wantData, wantLin
	}
	store := spice.NewStore(s.client)
	for did, lr := range lost {
		entries, err := store.LoadLineage(context.Background(), did, "")
		if err != nil {
			s.t.Fatal(err)
		}
		for _, en := range entries {
			if !lr.paths[en.Path] {
				continue
			}
			coll, rkey, _ := strings.Cut(en.Path, "/")
			wantLin = append(wantLin, view.LineageTuple(en.Tuple, view.RecordID(did, coll, rkey)).String())
			if lr.active && !slices.Contains(wantData, en.Tuple.String()) {
				wantData = append(wantData, en.Tuple.String())
			}
		}
	}
	sort.Strings(wantData)
	sort.Strings(wantLin)
	return wantData, wantLin
}

// listAll lists a repo's records of one collection. A deactivated or taken
// down repo can't be listed: its records are remembered from the last time
// the oracle saw it active (they can't change while it is inactive).
func (s *stack) listAll(did, coll string, active bool) ([]localpds.Record, error) {
	key := did + " " + coll
	if !active {
		return s.seen[key], nil
	}
	recs, err := s.xrpc.ListAllRecords(context.Background(), did, coll)
	if err == nil {
		s.seen[key] = recs
	}
	return recs, err
}

func (s *stack) relationships(types ...string) []string {
	s.t.Helper()
	var out []string
	for _, typ := range types {
		err := s.client.Read(context.Background(), &v1.RelationshipFilter{ResourceType: typ}, "", func(t view.Tuple) error {
			out = append(out, t.String())
			return nil
		})
		if err != nil {
			s.t.Fatal(err)
		}
	}
	sort.Strings(out)
	return out
}

// waitOracle polls until SpiceDB holds exactly the oracle's relationships.
func (s *stack) waitOracle(timeout time.Duration) (int, time.Duration) {
	s.t.Helper()
	start := time.Now()
	oracleData, oracleLin, lost := s.oracle()
	for {
		wantData, wantLin := s.acceptLost(lost, slices.Clone(oracleData), slices.Clone(oracleLin))
		gotData := s.relationships(view.TypeSpace, view.TypeGroup)
		gotLin := s.relationships(view.TypeLineage)
		dd, dl := testenv.Diff(gotData, wantData), testenv.Diff(gotLin, wantLin)
		if dd == "" && dl == "" {
			return len(gotData) + len(gotLin), time.Since(start)
		}
		if time.Since(start) > timeout {
			s.t.Fatalf("SpiceDB differs from the oracle after %v:\ndata:\n%s\nlineage:\n%s", timeout, dd, dl)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// check asks SpiceDB (fully consistent).
func (s *stack) check(perm, resourceID, subjectDID string) bool {
	s.t.Helper()
	resp, err := s.client.API().CheckPermission(context.Background(), &v1.CheckPermissionRequest{
		Consistency: spice.Consistency(""),
		Resource:    &v1.ObjectReference{ObjectType: s.client.Namespace().Type(view.TypeSpace), ObjectId: resourceID},
		Permission:  perm,
		Subject: &v1.SubjectReference{Object: &v1.ObjectReference{ObjectType: s.client.Namespace().Type(view.TypeAcct),
			ObjectId: view.EncodeDID(subjectDID)}},
	})
	if err != nil {
		s.t.Fatalf("check: %v", err)
	}
	return resp.GetPermissionship() == v1.CheckPermissionResponse_PERMISSIONSHIP_HAS_PERMISSION
}

// Writes -----------------------------------------------------------------

func create(coll, rkey string, v map[string]any) localpds.Write {
	v["$type"] = coll
	return localpds.Write{Action: "create", Collection: coll, RKey: rkey, Value: v}
}

func update(coll, rkey string, v map[string]any) localpds.Write {
	v["$type"] = coll
	return localpds.Write{Action: "update", Collection: coll, RKey: rkey, Value: v}
}

func del(coll, rkey string) localpds.Write {
	return localpds.Write{Action: "delete", Collection: coll, RKey: rkey}
}

const (
	spaceC = "com.atproto.space.space"
	groupC = "com.atproto.space.group"
	relC   = "com.atproto.space.relation"
)

func space(bubble bool) map[string]any {
	return map[string]any{"displayName": "space", "bubble": bubble}
}

func rel(resType, res, perm, subType, sub, subRel string) map[string]any {
	m := map[string]any{"resourceType": resType, "resource": res, "permission": perm, "subjectType": subType, "subject": sub}
	if subRel != "" {
		m["subjectRelation"] = subRel
	}
	return m
}

// metrics fetches the consumer's /metrics.
func (s *stack) metrics() string {
	s.t.Helper()
	resp, err := http.Get("http://" + s.httpAddr + "/metrics")
	if err != nil {
		s.t.Fatalf("metrics: %v", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// metricValue is the value of one series of the consumer's /metrics, as
// printed (name{labels}); -1 when it is absent.
func (s *stack) metricValue(series string) float64 {
	s.t.Helper()
	for _, l := range strings.Split(s.metrics(), "\n") {
		if name, v, ok := strings.Cut(l, " "); ok && name == series {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err != nil {
				s.t.Fatalf("metric %s: %v", l, err)
			}
			return f
		}
	}
	return -1
}

// status reads the consumer's /v1/status.
func (s *stack) status() httpapi.Status {
	s.t.Helper()
	var st httpapi.Status
	resp, err := http.Get("http://" + s.httpAddr + "/v1/status")
	if err != nil {
		s.t.Fatalf("status: %v", err)
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		s.t.Fatalf("status: %v", err)
	}
	return st
}

func grep(text, sub string) string {
	var out []string
	for _, l := range strings.Split(text, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// waitReady waits for the consumer's /readyz (connected to the PDS, lease
// held).
func (s *stack) waitReady() {
	s.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get("http://" + s.httpAddr + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("consumer not ready: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
