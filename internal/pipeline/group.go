package pipeline

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"

	"github.com/spaces-authz/spaces-authz/checkpoint"
	"github.com/spaces-authz/spaces-authz/spice"
)

// Group is a daemon that follows several PDSes directly, into one SpiceDB:
// one Consumer per PDS, each a source with its own projector object,
// lease, epoch and progress (DESIGN §11), under one errgroup.
// Its accessors serve the HTTP endpoints for all of them.
type Group struct {
	name    string
	members []*Consumer
}

// SourceName is the projector name of the source that follows pdsURL in a
// daemon named name that follows several PDSes: `<name>-<host>`, with the
// host's dots written `_` and its port's colon `__` (neither appears in a
// host name, so two hosts never share a name).
func SourceName(name, pdsURL string) (string, error) {
	u, err := url.Parse(pdsURL)
	if err != nil || u.Host == "" {
		return "", fmt.Errorf("pipeline: PDS URL %q has no host", pdsURL)
	}
	host := strings.ToLower(u.Host)
	host = strings.ReplaceAll(strings.ReplaceAll(host, ":", "__"), ".", "_")
	s := name + "-" + host
	if !spice.ValidName(s) {
		return "", fmt.Errorf("pipeline: source name %q (from --name and the PDS host): use letters, digits, _ and -, "+
			"at most 128", s)
	}
	return s, nil
}

// NewGroup builds one consumer per PDS URL from base: each named
// SourceName(base.Lease.Name, url), with its metrics labelled
// source="<host>" on base.Registry.
func NewGroup(base Config, pdsURLs []string) (*Group, error) {
	if len(pdsURLs) < 2 {
		return nil, errors.New("pipeline: a group follows two PDSes or more")
	}
	if base.Relay != nil {
		return nil, errors.New("pipeline: a group follows PDSes, not a relay")
	}
	if base.Lease.Name == "" {
		base.Lease.Name = DefaultName
	}
	if base.Registry == nil {
		base.Registry = prometheus.NewRegistry()
	}
	g := &Group{name: base.Lease.Name}
	seen := map[string]string{}
	for _, u := range pdsURLs {
		name, err := SourceName(base.Lease.Name, u)
		if err != nil {
			g.Close()
			return nil, err
		}
		if prev, dup := seen[name]; dup {
			g.Close()
			return nil, fmt.Errorf("pipeline: %s and %s are the same PDS host", prev, u)
		}
		seen[name] = u
		cfg := base
		cfg.PDSURL = u
		cfg.Lease.Name = name
		host, _ := url.Parse(u)
		cfg.Registry = prometheus.WrapRegistererWith(prometheus.Labels{"source": strings.ToLower(host.Host)}, base.Registry)
		cfg.Logger = base.Logger
		if cfg.Logger != nil {
			cfg.Logger = cfg.Logger.With("source", name)
		}
		if base.NATS != nil {
			nc := *base.NATS
			cfg.NATS = &nc
		}
		c, err := New(cfg)
		if err != nil {
			g.Close()
			return nil, fmt.Errorf("pipeline: source %s: %w", u, err)
		}
		g.members = append(g.members, c)
	}
	return g, nil
}

// Members are the group's consumers, one per PDS.
func (g *Group) Members() []*Consumer { return g.members }

// Run runs every source until ctx ends or one of them fails: a fatal error
// of one source (its cursor ahead of its PDS, fenced) stops the daemon, so
// that it is seen and restarted, as a daemon that follows one PDS does.
func (g *Group) Run(ctx context.Context) error {
	eg, ctx := errgroup.WithContext(ctx)
	for _, c := range g.members {
		eg.Go(func() error {
			if err := c.Run(ctx); err != nil {
				return fmt.Errorf("source %s: %w", c.cfg.Lease.Name, err)
			}
			return nil
		})
	}
	return eg.Wait()
}

// Close closes every source's connections.
func (g *Group) Close() error {
	var errs []error
	for _, c := range g.members {
		errs = append(errs, c.Close())
	}
	return errors.Join(errs...)
}

// Snapshot sums up the sources: the state of the first that is not
// running, else rebuilding when one is (running when all are), connected
// when all are, the largest lag, and each source's own snapshot in Sources.
func (g *Group) Snapshot() Snapshot {
	s := Snapshot{Name: g.name, State: StateRunning, Connected: true, Watermark: checkpoint.None,
		Highest: checkpoint.None, Cursor: checkpoint.None, Head: checkpoint.None}
	var errs []string
	for i, c := range g.members {
		m := c.Snapshot()
		s.Sources = append(s.Sources, m)
		if i == 0 || m.Started.Before(s.Started) {
			s.Started = m.Started
		}
		if i == 0 {
			s.Holder = m.Holder
		}
		switch {
		case !m.State.Running() && s.State.Running():
			s.State = m.State
		case m.State == StateRebuilding && s.State == StateRunning:
			s.State = m.State // one source rebuilding: the view is not complete
		}
		s.Fenced = s.Fenced || m.Fenced
		s.Connected = s.Connected && m.Connected
		s.InFlight += m.InFlight
		s.Restarts += m.Restarts
		s.Rebuilt += m.Rebuilt
		s.LagEvents = max(s.LagEvents, m.LagEvents)
		s.LagSeconds = max(s.LagSeconds, m.LagSeconds)
		e := &s.Engine
		e.EventsWritten += m.Engine.EventsWritten
		e.Batches += m.Engine.Batches
		e.CachedRepos += m.Engine.CachedRepos
		e.Poisoned += m.Engine.Poisoned
		e.Desynchronized += m.Engine.Desynchronized
		e.DesyncDIDs = append(e.DesyncDIDs, m.Engine.DesyncDIDs...)
		e.RebuildIncomplete += m.Engine.RebuildIncomplete
		e.RebuildDone += m.Engine.RebuildDone
		e.RebuildTotal += m.Engine.RebuildTotal
		if m.LastError != "" {
			errs = append(errs, m.Name+": "+m.LastError)
		}
		if m.Engine.AppliedEventTime.After(e.AppliedEventTime) {
			e.AppliedEventTime = m.Engine.AppliedEventTime
		}
	}
	s.LastError = strings.Join(errs, "; ")
	return s
}

// WaitApplied waits until the source whose stream carries did has applied
// rev: every source is asked, and the first answer wins (a source that
// never sees the repo waits until ctx ends, and is then cancelled).
func (g *Group) WaitApplied(ctx context.Context, did, rev string) (string, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	type answer struct {
		token string
		err   error
	}
	answers := make(chan answer, len(g.members))
	for _, c := range g.members {
		go func() {
			t, err := c.WaitApplied(ctx, did, rev)
			answers <- answer{t, err}
		}()
	}
	var last error
	for range g.members {
		a := <-answers
		if a.err == nil {
			return a.token, nil
		}
		last = a.err
	}
	return "", last
}

// Resync asks every source to resync dids: the one that owns a repo reads
// it from its PDS; another finds that its PDS does not serve it as newer
// and writes nothing (DESIGN §4, ownership). It fails only when every
// source failed.
func (g *Group) Resync(ctx context.Context, dids []string) error {
	errs := make([]error, len(g.members))
	var eg errgroup.Group
	for i, c := range g.members {
		eg.Go(func() error {
			errs[i] = c.Resync(ctx, dids)
			return nil
		})
	}
	_ = eg.Wait()
	for _, err := range errs {
		if err == nil {
			return nil
		}
	}
	return errors.Join(errs...)
}
