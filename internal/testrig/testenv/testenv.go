// Package testenv assembles the rig for projection tests: a fake PDS, a
// real SpiceDB (serve-testing, one isolated datastore per test through its
// token; or `spicedb serve` on PostgreSQL, NewOn), the schema, in-process consumers, and an oracle that computes the
// expected relationships straight from the fake PDS's current records.
package testenv

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sort"
	"strings"
	"testing"
	"time"

	v1 "github.com/authzed/authzed-go/proto/authzed/api/v1"

	"github.com/spaces-authz/spaces-authz/checkpoint"
	"github.com/spaces-authz/spaces-authz/deploy"
	"github.com/spaces-authz/spaces-authz/internal/pipeline"
	"github.com/spaces-authz/spaces-authz/internal/testrig/fakepds"
	"github.com/spaces-authz/spaces-authz/internal/testrig/pgtest"
	"github.com/spaces-authz/spaces-authz/internal/testrig/spicedbtest"
	"github.com/spaces-authz/spaces-authz/spice"
	"github.com/spaces-authz/spaces-authz/view"
)

// Env is one test's world.
type Env struct {
	T      testing.TB
	PDS    *fakepds.Server
	SDB    *spicedbtest.Server
	Token  string
	Client *spice.Client
	Rules  *view.Rules
	// Name is the projector (source) name the env's consumers use
	// (default pipeline.DefaultName).
	Name string
	// inactive and deleted accounts, as the oracle needs them
	status map[string]string
}

// OtherPDS returns an Env with a second fake PDS, followed by projector
// name, over the same SpiceDB datastore: several PDSes sharing one
// SpiceDB.
func (e *Env) OtherPDS(name string) *Env {
	e.T.Helper()
	return &Env{T: e.T, PDS: fakepds.New(e.T), SDB: e.SDB, Token: e.Token, Client: e.Client, Rules: e.Rules,
		Name: name, status: map[string]string{}}
}

// name is the projector name of the env's consumers.
func (e *Env) name() string {
	if e.Name == "" {
		return pipeline.DefaultName
	}
	return e.Name
}

// New builds an Env with the shipped schema applied.
func New(t testing.TB) *Env {
	return NewWithSchema(t, deploy.Schema)
}

// Datastore names the SpiceDB datastore an Env runs on.
type Datastore string

// The datastores tests run on.
const (
	// Memory is `spicedb serve-testing`, one process shared by the tests,
	// one isolated datastore per test.
	Memory Datastore = "memory"
	// Postgres is `spicedb serve` on a database of its own, on the
	// process's throwaway PostgreSQL cluster (pgtest).
	Postgres Datastore = "postgres"
)

// Datastores are the datastores a test that matters on both runs on.
var Datastores = []Datastore{Memory, Postgres}

// NewOn builds an Env on a given datastore with the shipped schema.
func NewOn(t testing.TB, ds Datastore) *Env {
	t.Helper()
	if ds == Memory {
		return New(t)
	}
	return NewOnSpiceDB(t, pgtest.SpiceDB(t))
}

// NewOnSpiceDB builds an Env on a SpiceDB started with `spicedb serve` (its
// preshared key is the Env's token), with the shipped schema.
func NewOnSpiceDB(t testing.TB, sdb *spicedbtest.Server) *Env {
	t.Helper()
	e := &Env{T: t, PDS: fakepds.New(t), SDB: sdb, Token: sdb.Key, Rules: view.DefaultRules(), status: map[string]string{}}
	e.dial(deploy.Schema)
	return e
}

func (e *Env) dial(schema string) {
	c, err := spice.Dial(e.SpiceConfig())
	if err != nil {
		e.T.Fatal(err)
	}
	e.T.Cleanup(func() { _ = c.Close() })
	e.Client = c
	if _, err := c.ApplySchema(context.Background(), schema); err != nil {
		e.T.Fatal(err)
	}
}

// NewWithSchema builds an Env with a given schema (to make SpiceDB refuse
// something the rules allow).
func NewWithSchema(t testing.TB, schema string) *Env {
	t.Helper()
	e := &Env{T: t, PDS: fakepds.New(t), SDB: spicedbtest.Shared(t), Token: spicedbtest.RandomToken(),
		Rules: view.DefaultRules(), status: map[string]string{}}
	e.dial(schema)
	return e
}

// Fork returns an Env over the same fake PDS with a fresh, empty SpiceDB
// datastore (a memory one, whatever e runs on): for a reference run to
// compare with.
func (e *Env) Fork() *Env {
	e.T.Helper()
	f := &Env{T: e.T, PDS: e.PDS, SDB: spicedbtest.Shared(e.T), Token: spicedbtest.RandomToken(), Rules: e.Rules,
		status: e.status}
	f.dial(deploy.Schema)
	return f
}

// ForkOnSpiceDB is Fork on a given SpiceDB started with `spicedb serve`
// (its preshared key is the fork's token): the same fake PDS and oracle
// over, say, a fresh PostgreSQL database (pgtest.SpiceDBOn), so that a
// reference run uses the same datastore as the run it is compared with.
func (e *Env) ForkOnSpiceDB(sdb *spicedbtest.Server) *Env {
	e.T.Helper()
	f := &Env{T: e.T, PDS: e.PDS, SDB: sdb, Token: sdb.Key, Rules: e.Rules, Name: e.Name, status: e.status}
	f.dial(deploy.Schema)
	return f
}

// SpiceConfig reaches this test's datastore.
func (e *Env) SpiceConfig() spice.Config {
	return spice.Config{Endpoint: e.SDB.Addr, Token: e.Token, Insecure: true}
}

// Logger for consumers: quiet unless CONSUMER_TEST_LOG is set.
func Logger() *slog.Logger {
	if os.Getenv("CONSUMER_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// Running is an in-process consumer.
type Running struct {
	*pipeline.Consumer
	cancel context.CancelFunc
	done   chan struct{}
	err    error
}

// Stop cancels the consumer and returns what Run returned.
func (r *Running) Stop() error {
	r.cancel()
	select {
	case <-r.done:
		return r.err
	case <-time.After(20 * time.Second):
		return errors.New("consumer did not stop")
	}
}

// Done is closed once Run has returned; Err then says what it returned.
func (r *Running) Done() <-chan struct{} { return r.done }

// Err is what Run returned (valid after Done is closed).
func (r *Running) Err() error { return r.err }

// StoreCursor stores a cursor as if a consumer had applied everything up to
// seq, so that a consumer replays the stream from there instead of
// rebuilding from snapshots (which is what a first run does).
func (e *Env) StoreCursor(seq int64) {
	e.T.Helper()
	lease := spice.LeaseConfig{Client: e.Client, Name: e.name(), Holder: "testenv"}
	if _, err := spice.MoveProgress(context.Background(), lease, func(st checkpoint.State) (checkpoint.Step, error) {
		return checkpoint.MoveTo(e.name(), st, seq), nil
	}); err != nil {
		e.T.Fatal(err)
	}
}

// Start runs a consumer against the env; mutate tunes its config. Unless
// a cursor is stored already, it stores cursor 0 first: the consumer
// replays the whole stream (StartFirstRun tests the rebuild instead).
func (e *Env) Start(mutate ...func(*pipeline.Config)) *Running {
	e.T.Helper()
	if st, err := e.Client.ReadProjector(context.Background(), e.name()); err == nil && st.Progress.Cursor == checkpoint.None {
		e.StoreCursor(0)
	}
	return e.StartFirstRun(mutate...)
}

// StartFirstRun runs a consumer without storing a cursor first.
func (e *Env) StartFirstRun(mutate ...func(*pipeline.Config)) *Running {
	e.T.Helper()
	cfg := pipeline.Config{PDSURL: e.PDS.URL(), SpiceDB: e.SpiceConfig(), Logger: Logger(),
		Lease:  pipeline.LeaseConfig{Name: e.name(), HeartbeatEvery: time.Second, Timeout: 3 * time.Second},
		Engine: pipeline.EngineConfig{FlushEvery: 50 * time.Millisecond, Rules: e.Rules}}
	for _, m := range mutate {
		m(&cfg)
	}
	c, err := pipeline.New(cfg)
	if err != nil {
		e.T.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &Running{Consumer: c, cancel: cancel, done: make(chan struct{})}
	go func() {
		r.err = c.Run(ctx)
		close(r.done)
	}()
	e.T.Cleanup(func() {
		_ = r.Stop()
		_ = c.Close()
	})
	return r
}

// WaitCaughtUp waits until r has applied every event up to the PDS's head.
func (e *Env) WaitCaughtUp(r *Running) {
	e.T.Helper()
	head := e.PDS.Head()
	deadline := time.Now().Add(30 * time.Second)
	for {
		s := r.Snapshot()
		if s.Watermark >= head {
			return
		}
		select {
		case <-r.done:
			e.T.Fatalf("consumer stopped before catching up (watermark %d, head %d): %v", s.Watermark, head, r.err)
		default:
		}
		if time.Now().After(deadline) {
			e.T.Fatalf("consumer did not catch up: watermark %d, head %d, state %s, last error %s",
				s.Watermark, head, s.State, s.LastError)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// WaitRebuilt waits until r has committed n rebuilds.
func (e *Env) WaitRebuilt(r *Running, n int) {
	e.T.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for r.Snapshot().Rebuilt < n {
		select {
		case <-r.done:
			e.T.Fatalf("consumer stopped before rebuilding: %v", r.err)
		default:
		}
		if time.Now().After(deadline) {
			s := r.Snapshot()
			e.T.Fatalf("no rebuild committed: state %s, last error %s", s.State, s.LastError)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// Relationships reads every relationship of the given resource types as
// sorted strings.
func (e *Env) Relationships(types ...string) []string {
	e.T.Helper()
	var out []string
	for _, typ := range types {
		err := e.Client.Read(context.Background(), &v1.RelationshipFilter{ResourceType: typ}, "", func(t view.Tuple) error {
			out = append(out, t.String())
			return nil
		})
		if err != nil {
			e.T.Fatal(err)
		}
	}
	sort.Strings(out)
	return out
}

// Data reads the space and group relationships.
func (e *Env) Data() []string { return e.Relationships(view.TypeSpace, view.TypeGroup) }

// Lineage reads the lineage relationships.
func (e *Env) Lineage() []string { return e.Relationships(view.TypeLineage) }

// SetStatus tells the oracle an account's status ("" active, "deleted",
// or a withdrawn status) and emits the #account event.
func (e *Env) SetStatus(did, status string) {
	e.T.Helper()
	e.status[did] = status
	if _, err := e.PDS.Account(did, status == "", status); err != nil {
		e.T.Fatal(err)
	}
}

// Expected computes, from the fake PDS's current records and the oracle's
// account statuses, the data and lineage relationships SpiceDB must hold.
func (e *Env) Expected() (data, lineage []string) {
	return e.expected(func(string) bool { return true })
}

// expected is Expected over the accounts for which keep holds.
func (e *Env) expected(keep func(did string) bool) (data, lineage []string) {
	dataSet := map[string]bool{}
	for _, did := range e.PDS.DIDs() {
		if !keep(did) {
			continue
		}
		st := e.status[did]
		if st == "deleted" {
			continue
		}
		for path, rec := range e.PDS.Repo(did).Records() {
			coll, rkey, _ := strings.Cut(path, "/")
			tuples, err := e.Rules.Project(did, coll, rkey, rec)
			if err != nil {
				continue
			}
			for _, t := range tuples {
				if st == "" {
					dataSet[t.String()] = true
				}
				lineage = append(lineage, view.LineageTuple(t, view.RecordID(did, coll, rkey)).String())
			}
		}
	}
	for s := range dataSet {
		data = append(data, s)
	}
	sort.Strings(data)
	sort.Strings(lineage)
	return data, lineage
}

// AssertMatchesOracles compares SpiceDB's data and lineage with what the
// envs' PDSes hold together (several PDSes sharing one SpiceDB). An
// account several PDSes know (a migration) counts where it is active; if
// it is active nowhere, on the last env that knows it.
func AssertMatchesOracles(envs ...*Env) {
	e := envs[0]
	e.T.Helper()
	owner := map[string]*Env{}
	for _, o := range envs {
		for _, did := range o.PDS.DIDs() {
			if cur, ok := owner[did]; !ok || cur.status[did] != "" {
				owner[did] = o
			}
		}
	}
	var wantData, wantLin []string
	for _, o := range envs {
		d, l := o.expected(func(did string) bool { return owner[did] == o })
		wantData, wantLin = append(wantData, d...), append(wantLin, l...)
	}
	if d := Diff(e.Data(), wantData); d != "" {
		e.T.Fatalf("data relationships differ from the oracles:\n%s", d)
	}
	if d := Diff(e.Lineage(), wantLin); d != "" {
		e.T.Fatalf("lineage differs from the oracles:\n%s", d)
	}
}

// Under lists every relationship of the definitions the projector writes
// whose resource belongs to did (data, lineage, the repo's state): what a
// projector that does not own did must leave byte-identical.
func (e *Env) Under(did string) []string {
	e.T.Helper()
	var out []string
	for _, rel := range e.Relationships(view.TypeSpace, view.TypeGroup, view.TypeLineage, view.TypeRepo) {
		_, rest, _ := strings.Cut(rel, ":")
		if strings.HasPrefix(rest, view.DIDPrefix(did)) || strings.HasPrefix(rest, view.RepoID(did)+"#") {
			out = append(out, rel)
		}
	}
	return out
}

// AssertMatchesOracle compares SpiceDB's data and lineage with Expected.
func (e *Env) AssertMatchesOracle() {
	e.T.Helper()
	wantData, wantLin := e.Expected()
	if d := Diff(e.Data(), wantData); d != "" {
		e.T.Fatalf("data relationships differ from the oracle:\n%s", d)
	}
	if d := Diff(e.Lineage(), wantLin); d != "" {
		e.T.Fatalf("lineage differs from the oracle:\n%s", d)
	}
}

// Diff lists what is missing from got and what is extra in it.
func Diff(got, want []string) string {
	g, w := map[string]bool{}, map[string]bool{}
	for _, s := range got {
		g[s] = true
	}
	for _, s := range want {
		w[s] = true
	}
	var b strings.Builder
	for _, s := range want {
		if !g[s] {
			fmt.Fprintf(&b, "  missing %s\n", s)
		}
	}
	for _, s := range got {
		if !w[s] {
			fmt.Fprintf(&b, "  extra   %s\n", s)
		}
	}
	return b.String()
}

// Check asks SpiceDB (fully consistent) whether subject has permission on
// resource. Subjects are acct DIDs.
func (e *Env) Check(permission, resourceType, resourceID, subjectDID string) bool {
	e.T.Helper()
	resp, err := e.Client.API().CheckPermission(context.Background(), &v1.CheckPermissionRequest{
		Consistency: spice.Consistency(""),
		Resource:    &v1.ObjectReference{ObjectType: e.Client.Namespace().Type(resourceType), ObjectId: resourceID},
		Permission:  permission,
		Subject: &v1.SubjectReference{Object: &v1.ObjectReference{ObjectType: e.Client.Namespace().Type(view.TypeAcct),
			ObjectId: view.EncodeDID(subjectDID)}},
	})
	if err != nil {
		e.T.Fatalf("check %s on %s:%s for %s: %v", permission, resourceType, resourceID, subjectDID, err)
	}
	return resp.GetPermissionship() == v1.CheckPermissionResponse_PERMISSIONSHIP_HAS_PERMISSION
}

// Records helpers -------------------------------------------------------

// Space is a space record write.
func Space(action, key string, bubble bool) fakepds.Write {
	return fakepds.Write{Action: action, Collection: "com.atproto.space.space", RKey: key,
		Value: map[string]any{"$type": "com.atproto.space.space", "displayName": key, "bubble": bubble}}
}

// Group is a group record write.
func Group(action, key string) fakepds.Write {
	return fakepds.Write{Action: action, Collection: "com.atproto.space.group", RKey: key,
		Value: map[string]any{"$type": "com.atproto.space.group", "displayName": key}}
}

// Relation is a relation record write.
func Relation(action, rkey, resType, res, perm, subType, sub, subRel string) fakepds.Write {
	v := map[string]any{"$type": "com.atproto.space.relation", "resourceType": resType, "resource": res,
		"permission": perm, "subjectType": subType, "subject": sub}
	if subRel != "" {
		v["subjectRelation"] = subRel
	}
	return fakepds.Write{Action: action, Collection: "com.atproto.space.relation", RKey: rkey, Value: v}
}

// Delete is a delete of any record.
func Delete(collection, rkey string) fakepds.Write {
	return fakepds.Write{Action: "delete", Collection: collection, RKey: rkey}
}

// Must fails the test on err.
func Must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}
