package projector

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/spaces-authz/spaces-authz/checkpoint"
	"github.com/spaces-authz/spaces-authz/internal/testrig/metrictest"
	"github.com/spaces-authz/spaces-authz/view"
)

// TestMemStalePendingClaimDoesNotTakeBackFromANewerOwner: this engine
// ("default") is PDS B. alice (owned by pds-a at rev R) is activated on B,
// but B's getRepo fails, so B stores repo:alice#claim@projector:default.
// While B is unreachable alice moves on to pds-c (importRepo keeps rev R),
// pds-c's projector claims her, which removes every pending claim of the
// repo, and pds-c then takes her down. B comes back, still serving its
// stale copy as active. Its pending activation was against pds-a, and its
// claim tuple is gone: it must not take alice from pds-c at the same rev.
// Before, claimWrites removed only its own claim and the pending activation
// was honoured whatever the owner, so B undid pds-c's takedown.
func TestMemStalePendingClaimDoesNotTakeBackFromANewerOwner(t *testing.T) {
	for _, restart := range []bool{false, true} {
		name := "in-memory retry"
		if restart {
			name = "after a restart (Load)"
		}
		t.Run(name, func(t *testing.T) {
			h := aliceOwnedBy(t, "pds-a", nil)
			h.engine.cfg.ResyncAttempts = 1

			h.failGetRepo(memAlice, errors.New("getRepo: 503 upstream"))
			h.account(memAlice, "") // activation on B; its claim fails
			h.settle()
			if len(h.view.matching(func(tu view.Tuple) bool { return tu.Relation == view.RelClaim })) != 1 {
				t.Fatal("no claim tuple stored")
			}
			if restart {
				h.stop()
			}

			// alice moves B -> pds-c; pds-c's projector claims her at rev R
			// (what claimWrites writes), then pds-c takes her down.
			h.view.mu.Lock()
			delete(h.view.rels, view.SourceTuple(memAlice, "pds-a"))
			delete(h.view.rels, view.EpochTuple("pds-a", 0))
			h.view.rels[view.EpochTuple("pds-a", 1)] = true
			h.view.rels[view.SourceTuple(memAlice, "pds-c")] = true
			h.view.rels[view.EpochTuple("pds-c", 0)] = true
			// pds-c's claim write deletes every pending claim of the repo
			// (claimWrites), this source's included.
			delete(h.view.rels, view.ClaimTuple(memAlice, "pds-c"))
			delete(h.view.rels, view.ClaimTuple(memAlice, "default"))
			withdrawData(h.view.rels, memAlice) // pds-c's takedown
			h.view.rels[view.StatusTuple(memAlice, "takendown", 701)] = true
			h.view.mu.Unlock()

			// B is reachable again; it still serves its stale copy as active.
			h.failGetRepo(memAlice, nil)
			if restart {
				h.start(h.view.progress(t))
			}
			time.Sleep(4 * time.Second)
			owner := h.view.matching(func(tu view.Tuple) bool { return tu.Relation == view.RelSource })
			data := h.view.matching(func(tu view.Tuple) bool {
				return tu.ResourceType == view.TypeSpace && strings.HasPrefix(tu.ResourceID, view.DIDPrefix(memAlice))
			})
			status := h.view.matching(func(tu view.Tuple) bool { return tu.Relation == view.RelStatus })
			if len(data) > 0 || owner[0].SubjectID != "pds-c" {
				t.Fatalf("pds-c (alice's current PDS) took her down; B's stale pending claim took her back:\nowner %v\nstatus %v\ndata %v\nclaims %v",
					owner, status, data, metrictest.Value(t, h.reg, "spaces_authz_repo_claims_total"))
			}
		})
	}
}

// TestMemCommitOnNewPDSClaimsAfterOldOwnerDeletedTheAccount: this engine
// ("default") is alice's new PDS; it did not see her activation (it
// started later, or the event was lost). The old owner pds-a deleted her
// account after the move, so it stores no rev and status deleted: there is
// no rev to compare with, and her next commit on this PDS takes the repo
// over (DESIGN §4). For a while every claim against an owner with no rev
// needed an activation, and she stayed deleted in the view for good.
func TestMemCommitOnNewPDSClaimsAfterOldOwnerDeletedTheAccount(t *testing.T) {
	// pds-a owns alice and applied its deletion of her (after the move).
	h := aliceOwnedBy(t, "pds-a", func(rels map[view.Tuple]bool) {
		withdrawData(rels, memAlice)
		for tu := range rels {
			if tu.ResourceType == view.TypeLineage && strings.HasPrefix(tu.ResourceID, view.DIDPrefix(memAlice)) ||
				tu.Relation == view.RelRev {
				delete(rels, tu)
			}
		}
		rels[view.StatusTuple(memAlice, statusDeleted, 900)] = true
	})

	// alice commits on her new PDS, twice.
	h.commit(memAlice, map[string]map[string]any{relCol + "g2": grant(memAlice, "root", "editor", memBob)})
	h.settle()
	time.Sleep(100 * time.Millisecond)
	h.commit(memAlice, map[string]map[string]any{spaceCol + "kid": space(false)})
	h.settle()
	time.Sleep(300 * time.Millisecond)
	owner := h.view.matching(func(tu view.Tuple) bool { return tu.Relation == view.RelSource })
	if owner[0].SubjectID != "default" {
		t.Fatalf("alice is active on this PDS and committed twice, yet every claim was refused (refused %v): owner %v, data %v",
			metrictest.Value(t, h.reg, "spaces_authz_repo_claims_refused_total"), owner,
			h.view.matching(func(tu view.Tuple) bool { return tu.ResourceType == view.TypeSpace }))
	}
}

// TestMemAClaimRemovesEveryPendingClaim: a claim that completes removes
// the pending claims other sources stored for the repo: they were
// activations seen against the owner that no longer holds it. Before, a
// claim removed only its own, and another source's leftover claim could
// take the repo back from the new owner after a restart.
func TestMemAClaimRemovesEveryPendingClaim(t *testing.T) {
	h := newMemHarness(t, checkpoint.State{Cursor: 0, Rewind: checkpoint.None, Rebuild: checkpoint.None})
	h.commit(memAlice, map[string]map[string]any{spaceCol + "root": space(false)})
	h.assertView("alice projected")
	h.restart(func(rels map[view.Tuple]bool) {
		handOver(rels, memAlice, "pds-a")
		rels[view.ClaimTuple(memAlice, "pds-x")] = true // pds-x's activation, its claim pending
	})
	h.commit(memAlice, map[string]map[string]any{spaceCol + "kid": space(false)}) // a newer copy here: a claim
	waitForMem(t, "the claim", func() bool {
		o := h.view.matching(func(tu view.Tuple) bool { return tu.Relation == view.RelSource })
		return len(o) == 1 && o[0].SubjectID == "default"
	})
	if left := h.view.matching(func(tu view.Tuple) bool { return tu.Relation == view.RelClaim }); len(left) != 0 {
		t.Fatalf("pending claims left after the takeover: %v", left)
	}
	h.assertView("after the takeover")
}
