//go:build e2e

package e2e

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	v1 "github.com/authzed/authzed-go/proto/authzed/api/v1"
	"google.golang.org/protobuf/proto"

	"github.com/spaces-authz/spaces-authz/internal/httpapi"
	"github.com/spaces-authz/spaces-authz/internal/testrig/localpds"
	"github.com/spaces-authz/spaces-authz/internal/testrig/procs"
	"github.com/spaces-authz/spaces-authz/internal/testrig/spicedbtest"
	"github.com/spaces-authz/spaces-authz/internal/testrig/testenv"
	"github.com/spaces-authz/spaces-authz/spice"
	"github.com/spaces-authz/spaces-authz/view"
)

// adminToken is the admin API's bearer token of both daemons.
const adminToken = e2eAdminToken

// markC is a collection no rule projects: a write to it is a stream event
// that changes nothing in SpiceDB, so a consumer that has applied it has
// read everything its PDS emitted before (see side.caughtUp).
const markC = "com.example.e2e.mark"

// world is two reference PDSs on one PLC, one SpiceDB `serve`, and one
// consumer process per PDS, each under its own projector name. Each side
// is a stack (so its accounts, writes, listings and checks are the single
// PDS harness's) that shares the world's SpiceDB and client.
type world struct {
	t      testing.TB
	sdb    *spicedbtest.Server
	client *spice.Client
	a, b   *side
	// owner, when set, is the one source that must own every repo (a
	// consumer that follows a relay); otherwise a repo's host's side.
	owner string
}

// side is one PDS and its consumer, projector name name.
type side struct {
	*stack
	name string
	runs int // one-shot commands run, to name their logs
}

func newWorld(t testing.TB) *world {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	t0 := time.Now()
	pdsA, err := localpds.Start(ctx, localpds.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = pdsA.Stop() })
	// B (on A's PLC) and SpiceDB start while the consumer is built.
	var (
		wg      sync.WaitGroup
		pdsB    *localpds.PDS
		sdb     *spicedbtest.Server
		errB, e error
	)
	wg.Add(2)
	go func() { defer wg.Done(); pdsB, errB = localpds.Start(ctx, localpds.Options{SharePLC: pdsA}) }()
	go func() { defer wg.Done(); sdb, e = spicedbtest.StartServe(ctx, spicedbtest.ServeOptions{}) }()
	consumerBin(t)
	wg.Wait()
	if pdsB != nil {
		t.Cleanup(func() { _ = pdsB.Stop() })
	}
	if sdb != nil {
		t.Cleanup(sdb.Stop)
	}
	if err := errors.Join(errB, e); err != nil {
		t.Fatal(err)
	}
	client, err := spice.Dial(spice.Config{Endpoint: sdb.Addr, Token: sdb.Key, Insecure: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = client.Close() })
	logDir := t.TempDir()
	if d := os.Getenv("E2E_LOG_DIR"); d != "" { // keep the processes' logs, e.g. to study a failure
		logDir = filepath.Join(d, fmt.Sprintf("%s-%d", strings.ReplaceAll(t.Name(), "/", "_"), time.Now().UnixNano()))
		if err := os.MkdirAll(logDir, 0o755); err != nil {
			t.Fatal(err)
		}
		t.Logf("logs in %s", logDir)
	}
	w := &world{t: t, sdb: sdb, client: client}
	mk := func(name string, p *localpds.PDS) *side {
		return &side{name: name, stack: &stack{t: t, pds: p, xrpc: p.Client(), sdb: sdb, client: client,
			rules: view.DefaultRules(), logDir: logDir, accounts: map[string]localpds.Session{},
			seen: map[string][]localpds.Record{}}}
	}
	w.a, w.b = mk("pds-a", pdsA), mk("pds-b", pdsB)
	w.a.cli("schema", "apply")
	t.Logf("world up in %v: PDS A %s, PDS B %s (PLC %s), SpiceDB %s", time.Since(t0).Round(time.Millisecond),
		pdsA.URL, pdsB.URL, pdsA.PLCURL, sdb.Addr)
	return w
}

func (sd *side) env() []string { return sd.stack.env() } // carries CONSUMER_ADMIN_TOKEN

func (sd *side) args() []string { return append(sd.commonArgs(), "--name", sd.name) }

// startDaemon runs `consumer run --name <name>` for this side's PDS, with
// the flags startConsumer passes and the admin token in its environment.
func (sd *side) startDaemon() *procs.Proc {
	t := sd.t
	t.Helper()
	port, err := spicedbtest.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	sd.httpAddr = fmt.Sprintf("127.0.0.1:%d", port)
	args := append([]string{"run", "--http-addr", sd.httpAddr, "--takeover", "--flush-every", "50ms",
		"--heartbeat-every", "1s", "--log-level", logLevel()}, sd.args()...)
	p, err := procs.Start(consumerBin(t), args, sd.env(), filepath.Join(sd.logDir, sd.name+"-daemon.log"), nil)
	if err != nil {
		t.Fatal(err)
	}
	sd.consumer = p
	t.Cleanup(func() {
		if p.Running() {
			_ = p.Stop(15 * time.Second)
		}
		if t.Failed() && p == sd.consumer { // one log file per side
			t.Logf("%s daemon log (tail):\n%s", sd.name, tail(p.Output(), 4000))
		}
	})
	return p
}

// stopDaemon stops the daemon with SIGTERM; it must exit cleanly.
func (sd *side) stopDaemon() {
	sd.t.Helper()
	if err := sd.consumer.Stop(15 * time.Second); err != nil {
		sd.t.Fatalf("%s daemon: %v\n%s", sd.name, err, tail(sd.consumer.Output(), 3000))
	}
}

// run runs a one-shot consumer command under this side's projector name
// (with the admin token) and returns its output and exit code.
func (sd *side) run(args ...string) (string, int) {
	sd.t.Helper()
	sd.runs++
	log := filepath.Join(sd.logDir, fmt.Sprintf("%s-%s-%d.log", sd.name, args[0], sd.runs))
	p, err := procs.Start(consumerBin(sd.t), append(args, sd.args()...), sd.env(), log, nil)
	if err != nil {
		sd.t.Fatal(err)
	}
	select {
	case <-p.Done():
	case <-time.After(2 * time.Minute):
		p.Kill()
		sd.t.Fatalf("consumer %v still running after 2 min:\n%s", args, tail(p.Output(), 3000))
	}
	var ee *exec.ExitError
	if err := p.ExitErr(); errors.As(err, &ee) {
		return p.Output(), ee.ExitCode()
	} else if err != nil {
		sd.t.Fatal(err)
	}
	return p.Output(), 0
}

// mustRun is run that requires exit code 0.
func (sd *side) mustRun(args ...string) string {
	sd.t.Helper()
	out, code := sd.run(args...)
	if code != 0 {
		sd.t.Fatalf("%s: consumer %v: exit %d:\n%s", sd.name, args, code, tail(out, 3000))
	}
	return out
}

// caughtUp waits until the daemon has applied every event its PDS emitted
// so far: an account of this PDS writes a record no rule projects, the
// daemon's /v1/consistency confirms its rev (so the daemon has read every
// earlier event of the stream), then /v1/status's watermark reaches the
// highest seq the daemon had read by then.
func (sd *side) caughtUp(marker localpds.Session) time.Duration {
	sd.t.Helper()
	start := time.Now()
	ref, err := sd.xrpc.CreateRecord(context.Background(), marker, markC, "",
		map[string]any{"$type": markC, "at": time.Now().UTC().Format(time.RFC3339Nano)})
	if err != nil {
		sd.t.Fatalf("%s: marker write: %v", sd.name, err)
	}
	deadline := start.Add(60 * time.Second)
	for {
		_, err := sd.consistent(marker.DID, ref.Rev)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			sd.t.Fatalf("%s: the marker commit %s of %s was not applied: %v", sd.name, ref.Rev, marker.Handle, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	head := sd.status().HeadSeq
	for {
		st := sd.status()
		if st.Watermark >= head && st.InFlight == 0 {
			return time.Since(start)
		}
		if time.Now().After(deadline) {
			sd.t.Fatalf("%s: not caught up: %+v, want watermark >= %d", sd.name, st, head)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// consistentWithin is stack.consistent with its own timeout.
func (sd *side) consistentWithin(did, rev string, timeout time.Duration) (string, error) {
	q := url.Values{"did": {did}, "rev": {rev}, "timeout": {timeout.String()}}
	resp, err := http.Get("http://" + sd.httpAddr + "/v1/consistency?" + q.Encode())
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	var body httpapi.ConsistencyResponse
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("consistency: HTTP %d: %s", resp.StatusCode, body.Error)
	}
	return body.ZedToken, nil
}

// adminResync calls the daemon's POST /v1/admin/resync with token and
// returns the HTTP status and body.
func (sd *side) adminResync(token string, dids ...string) (int, string) {
	sd.t.Helper()
	req, err := http.NewRequest(http.MethodPost, "http://"+sd.httpAddr+"/v1/admin/resync?"+url.Values{"did": dids}.Encode(), nil)
	if err != nil {
		sd.t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := (&http.Client{Timeout: 2 * time.Minute}).Do(req)
	if err != nil {
		sd.t.Fatalf("%s admin resync: %v", sd.name, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, strings.TrimSpace(string(b))
}

// Oracle ------------------------------------------------------------------

// host is where the oracle reads a DID from: the side whose PDS serves it
// as active (nil, false when none does), or else the side that still has
// it, inactive (nil when it is deleted everywhere).
func (w *world) host(did string) (*side, bool) {
	var inactive *side
	for _, sd := range []*side{w.a, w.b} {
		st, err := sd.xrpc.GetRepoStatus(context.Background(), did)
		if err != nil {
			continue // no such repo there
		}
		if st.Active {
			return sd, true
		}
		inactive = sd
	}
	return inactive, false
}

// dids lists every DID either side ever created or received.
func (w *world) dids() []string {
	set := map[string]bool{}
	for _, sd := range []*side{w.a, w.b} {
		for _, sess := range sd.accounts {
			set[sess.DID] = true
		}
	}
	out := make([]string, 0, len(set))
	for d := range set {
		out = append(out, d)
	}
	sort.Strings(out)
	return out
}

// oracle is stack.oracle over both PDSs: a DID's relationships come from
// the PDS that hosts it as active (before a migration A, after it B); an
// inactive DID keeps its lineage only; a DID deleted everywhere produces
// nothing. sources maps every DID hosted as active to the projector that
// must own it.
func (w *world) oracle() (data, lineage []string, lost map[string]lostRecords, sources map[string]string) {
	w.t.Helper()
	dataSet := map[string]bool{}
	lost = map[string]lostRecords{}
	sources = map[string]string{}
	for _, did := range w.dids() {
		sd, active := w.host(did)
		if sd == nil {
			continue // deleted everywhere
		}
		if active && w.owner == "" {
			sources[did] = sd.name
		}
		listed := map[string]bool{}
		for _, coll := range sd.rules.Collections() {
			recs, err := sd.listAll(did, coll, active)
			if err != nil {
				w.t.Fatalf("list %s %s on %s: %v", did, coll, sd.name, err)
			}
			for _, r := range recs {
				rkey := r.URI[strings.LastIndex(r.URI, "/")+1:]
				listed[coll+"/"+rkey] = true
				tuples, err := sd.rules.Project(did, coll, rkey, r.Value)
				if err != nil {
					continue
				}
				if active && w.owner != "" {
					// One source owns every repo it wrote bookkeeping
					// for: those with projected records (a repo with
					// none has nothing to own).
					sources[did] = w.owner
				}
				for _, t := range tuples {
					if active {
						dataSet[t.String()] = true
					}
					lineage = append(lineage, view.LineageTuple(t, view.RecordID(did, coll, rkey)).String())
				}
			}
		}
		if active {
			if paths := sd.unlisted(did, listed); len(paths) > 0 {
				w.t.Logf("%s: %s lost the block of %v (its MST names them, listRecords hides them)", did, sd.name, paths)
				lost[did] = lostRecords{paths: paths, active: true}
			}
		}
	}
	for d := range dataSet {
		data = append(data, d)
	}
	sort.Strings(data)
	sort.Strings(lineage)
	return data, lineage, lost, sources
}

// sources reads every repo:<did>#source relationship: DID → projector.
func (w *world) sources() map[string]string {
	w.t.Helper()
	out := map[string]string{}
	err := w.client.Read(context.Background(), &v1.RelationshipFilter{ResourceType: view.TypeRepo,
		OptionalRelation: view.RelSource}, "", func(t view.Tuple) error {
		did, err := view.DecodeDID(t.ResourceID)
		if err != nil {
			return err
		}
		out[did] = t.SubjectID
		return nil
	})
	if err != nil {
		w.t.Fatal(err)
	}
	return out
}

// waitOracle polls until SpiceDB holds exactly the oracle's data (plus
// extra, relationships put there behind the consumers' backs on purpose)
// and lineage, and every DID hosted as active is owned by its host's
// projector. It returns the number of relationships compared.
func (w *world) waitOracle(timeout time.Duration, extra ...string) (int, time.Duration) {
	w.t.Helper()
	start := time.Now()
	oracleData, oracleLin, lost, wantSrc := w.oracle()
	oracleData = append(oracleData, extra...)
	sort.Strings(oracleData)
	for {
		wantData, wantLin := w.a.acceptLost(lost, slices.Clone(oracleData), slices.Clone(oracleLin))
		gotData := w.a.relationships(view.TypeSpace, view.TypeGroup)
		gotLin := w.a.relationships(view.TypeLineage)
		gotSrc := w.sources()
		dd, dl := testenv.Diff(gotData, wantData), testenv.Diff(gotLin, wantLin)
		var ds []string
		for did, want := range wantSrc {
			if gotSrc[did] != want {
				ds = append(ds, fmt.Sprintf("%s: source %q, want %q", did, gotSrc[did], want))
			}
		}
		if dd == "" && dl == "" && len(ds) == 0 {
			return len(gotData) + len(gotLin), time.Since(start)
		}
		if time.Since(start) > timeout {
			w.t.Fatalf("SpiceDB differs from the oracle after %v:\ndata:\n%s\nlineage:\n%s\nsources:\n%s",
				timeout, dd, dl, strings.Join(ds, "\n"))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Snapshots ---------------------------------------------------------------

// snapshot is every relationship of some repos, each as the bytes of its
// deterministic protobuf encoding (caveat and expiry included), keyed to a
// readable form for diffs.
type snapshot map[string]string

// snapshotOf reads, fully consistent, everything SpiceDB holds of dids:
// space and group relationships under `<encoded did>/`, their lineage, the
// repo's bookkeeping (repo:<encoded did>), and, when epochOf is set, that
// projector's ownership epoch.
func (w *world) snapshotOf(epochOf string, dids ...string) snapshot {
	w.t.Helper()
	filters := []*v1.RelationshipFilter{}
	for _, did := range dids {
		for _, typ := range []string{view.TypeSpace, view.TypeGroup, view.TypeLineage} {
			filters = append(filters, &v1.RelationshipFilter{ResourceType: typ, OptionalResourceIdPrefix: view.DIDPrefix(did)})
		}
		filters = append(filters, &v1.RelationshipFilter{ResourceType: view.TypeRepo, OptionalResourceId: view.RepoID(did)})
	}
	if epochOf != "" {
		filters = append(filters, &v1.RelationshipFilter{ResourceType: view.TypeProjector, OptionalResourceId: epochOf,
			OptionalRelation: view.RelEpoch})
	}
	out := snapshot{}
	for _, f := range filters {
		stream, err := w.client.API().ReadRelationships(context.Background(), &v1.ReadRelationshipsRequest{
			Consistency: spice.Consistency(""), RelationshipFilter: w.client.Namespace().Filter(f)})
		if err != nil {
			w.t.Fatal(err)
		}
		for {
			resp, err := stream.Recv()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				w.t.Fatal(err)
			}
			rel := resp.GetRelationship()
			b, err := proto.MarshalOptions{Deterministic: true}.Marshal(rel)
			if err != nil {
				w.t.Fatal(err)
			}
			out[hex.EncodeToString(b)] = w.client.FromV1(rel).String()
		}
	}
	return out
}

// diff lists the relationships only one of two snapshots holds.
func (s snapshot) diff(now snapshot) string {
	var out []string
	for k, r := range s {
		if _, ok := now[k]; !ok {
			out = append(out, "- "+r)
		}
	}
	for k, r := range now {
		if _, ok := s[k]; !ok {
			out = append(out, "+ "+r)
		}
	}
	sort.Strings(out)
	return strings.Join(out, "\n")
}
