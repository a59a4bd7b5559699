package checkpoint

import "container/heap"

// holds are the seqs of events that are done (the watermark may pass them,
// and the stream goes on) but whose bookkeeping is not stored yet: it rides
// with a later write. The stored cursor stays below the oldest of them, so
// the invariant holds: a cursor N still means every event ≤ N is stored.
// Released seqs are dropped lazily from the heap.
type holds struct {
	h        seqHeap
	released map[int64]int
	n        int
}

func (h *holds) add(seq int64) {
	heap.Push(&h.h, seq)
	h.n++
}

func (h *holds) release(seq int64) {
	if h.released == nil {
		h.released = map[int64]int{}
	}
	h.released[seq]++
	h.n--
}

// oldest is the smallest seq held (None when none).
func (h *holds) oldest() int64 {
	for len(h.h) > 0 {
		top := h.h[0]
		if c := h.released[top]; c > 0 {
			if c == 1 {
				delete(h.released, top)
			} else {
				h.released[top] = c - 1
			}
			heap.Pop(&h.h)
			continue
		}
		return top
	}
	return None
}

type seqHeap []int64

func (s seqHeap) Len() int           { return len(s) }
func (s seqHeap) Less(i, j int) bool { return s[i] < s[j] }
func (s seqHeap) Swap(i, j int)      { s[i], s[j] = s[j], s[i] }
func (s *seqHeap) Push(x any)        { *s = append(*s, x.(int64)) }
func (s *seqHeap) Pop() any {
	old := *s
	x := old[len(old)-1]
	*s = old[:len(old)-1]
	return x
}

// Hold keeps the stored cursor below seq until Release(seq): the event is
// done, but part of what it stored in memory (a repo's rev, say) rides with
// a later write. Holding a seq the stored cursor already passed is a bug;
// it is ignored.
func (p *Progress) Hold(seq int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if seq <= p.stored.Cursor {
		return
	}
	p.held.add(seq)
}

// Release ends holds once the write carrying what they waited for has
// committed.
func (p *Progress) Release(seqs ...int64) {
	if len(seqs) == 0 {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, s := range seqs {
		p.held.release(s)
	}
}

// Held is the number of holds.
func (p *Progress) Held() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.held.n
}
