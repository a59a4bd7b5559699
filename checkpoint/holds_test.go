package checkpoint

import (
	"slices"
	"testing"
)

// TestHoldsKeepTheCursorBelowThem: a done event whose bookkeeping rides
// with a later write holds the stored cursor below it until released, in
// any release order, and the cursor never moves backwards.
func TestHoldsKeepTheCursorBelowThem(t *testing.T) {
	s := store{}
	p, _ := New(Config{Source: "default", Stored: State{Cursor: 0, Rewind: None, Rebuild: None}})
	var held []int64
	next := int64(1)
	prev := int64(0)
	for i := range 3000 {
		begin(t, p, next)
		p.Tracker().Done(next)
		if i%4 == 0 {
			p.Hold(next)
			held = append(held, next)
		}
		next++
		if i%5 == 0 && len(held) > 0 {
			k := (i * 7919) % len(held)
			p.Release(held[k])
			held = slices.Delete(held, k, k+1)
		}
		if i%3 == 0 {
			commit(t, p, s, NoMarkers())
			c := p.Stored().Cursor
			if c < prev {
				t.Fatalf("cursor moved back from %d to %d", prev, c)
			}
			prev = c
			for _, h := range held {
				if c >= h {
					t.Fatalf("cursor %d stored while %d is held", c, h)
				}
			}
			if want := next - 1; len(held) == 0 && c != want {
				t.Fatalf("nothing held: cursor %d, want the watermark %d", c, want)
			}
			if p.Held() != len(held) {
				t.Fatalf("Held() = %d, want %d", p.Held(), len(held))
			}
		}
	}
	p.Release(held...)
	commit(t, p, s, NoMarkers())
	if c := p.Stored().Cursor; c != next-1 {
		t.Fatalf("all released: cursor %d, want %d", c, next-1)
	}
}
