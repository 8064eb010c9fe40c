package wireguard

// replayWindow rejects transport counters that were already seen or are
// too old, using a ring of bit blocks as in RFC 6479. The ring holds 8192
// bits, as in wireguard-go and Linux, so that a copy of a message that
// comes late over a slower path (relayed rather than direct) is still
// accepted; one block is always being recycled, so the usable window is
// replayWindowSize (8128) counters behind the highest one seen.
type replayWindow struct {
	last uint64
	ring [replayRingBlocks]uint64
}

const (
	replayBlockBits  = 64
	replayBlockShift = 6
	replayRingBlocks = 8192 / replayBlockBits
	replayWindowSize = (replayRingBlocks - 1) * replayBlockBits
)

func (w *replayWindow) reset() { *w = replayWindow{} }

// accept reports whether counter is new and within the window, and marks
// it seen. Counters at or above RejectAfterMessages are never accepted.
func (w *replayWindow) accept(counter uint64) bool {
	if counter >= RejectAfterMessages {
		return false
	}
	block := counter >> replayBlockShift
	if counter > w.last {
		cur := w.last >> replayBlockShift
		diff := block - cur
		if diff > replayRingBlocks {
			diff = replayRingBlocks
		}
		for i := cur + 1; i <= cur+diff; i++ {
			w.ring[i%replayRingBlocks] = 0
		}
		w.last = counter
	} else if w.last-counter > replayWindowSize {
		return false
	}
	bit := uint64(1) << (counter % replayBlockBits)
	b := &w.ring[block%replayRingBlocks]
	if *b&bit != 0 {
		return false
	}
	*b |= bit
	return true
}
