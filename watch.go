package microlink

import (
	"errors"
	"sync"
	"sync/atomic"
)

// Watch registers f to be called after every change of the node's state
// or of its peer list. The calls are made one at a time and in the order
// of the changes, from one goroutine of the node that serves every Watch;
// while f runs, later events wait for it, so f should return promptly.
// Events that only repeat a pending peer-list change are merged into it.
// The last event is the change to Stopped, delivered (with any still
// waiting) after Close returns; the goroutine ends after it.
//
// The returned function stops the calls to f. A call already under way
// when it is called, from another goroutine, may still begin or finish;
// called from f itself, it ensures f is not called again. It may be
// called more than once.
func (n *Node) Watch(f func(Event)) (stop func()) {
	w := &watcher{f: f}
	n.events.add(w)
	return func() { w.stopped.Store(true) }
}

type watcher struct {
	f       func(Event)
	stopped atomic.Bool
}

// eventQueue delivers a node's events to its watchers from one goroutine,
// started by the first Watch and ended once the node is closed and the
// queue is drained.
type eventQueue struct {
	mu       sync.Mutex
	queue    []Event
	watchers []*watcher
	wake     chan struct{} // signalled when queue grows or closed is set
	running  bool          // the delivery goroutine is running
	closed   bool          // no more events: the node is closed
	done     chan struct{} // closed when the delivery goroutine has ended
}

func (q *eventQueue) add(w *watcher) {
	q.mu.Lock()
	defer q.mu.Unlock()
	// A new slice: the delivery goroutine may be reading the old one.
	ws := make([]*watcher, 0, len(q.watchers)+1)
	for _, o := range q.watchers {
		if !o.stopped.Load() {
			ws = append(ws, o)
		}
	}
	q.watchers = append(ws, w)
	if q.running || q.closed {
		return
	}
	q.running = true
	if q.wake == nil {
		q.wake = make(chan struct{}, 1)
	}
	q.done = make(chan struct{})
	go q.deliver(q.done)
}

// push queues ev for the watchers. A peer-list event equal to the last
// one still queued is merged into it.
func (q *eventQueue) push(ev Event) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed || len(q.watchers) == 0 {
		return
	}
	if k := len(q.queue); ev.PeersChanged && k > 0 && sameEvent(q.queue[k-1], ev) {
		return
	}
	q.queue = append(q.queue, ev)
	q.signal()
}

func sameEvent(a, b Event) bool {
	return a.State == b.State && a.AuthURL == b.AuthURL && a.PeersChanged == b.PeersChanged &&
		errors.Is(a.Err, b.Err) && errors.Is(b.Err, a.Err)
}

func (q *eventQueue) signal() {
	if q.wake == nil {
		q.wake = make(chan struct{}, 1)
	}
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

// close queues ev, the node's last event, and lets the delivery goroutine
// end once it has delivered everything. It does not wait for that, as it
// may be called from a watcher.
func (q *eventQueue) close(ev Event) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		return
	}
	if len(q.watchers) > 0 {
		q.queue = append(q.queue, ev)
	}
	q.closed = true
	q.signal()
}

func (q *eventQueue) deliver(done chan struct{}) {
	defer close(done)
	for {
		q.mu.Lock()
		for len(q.queue) == 0 {
			if q.closed {
				q.running = false
				q.watchers = nil
				q.mu.Unlock()
				return
			}
			q.mu.Unlock()
			<-q.wake
			q.mu.Lock()
		}
		ev := q.queue[0]
		q.queue[0] = Event{}
		q.queue = q.queue[1:]
		if len(q.queue) == 0 {
			q.queue = nil // let the backing array go
		}
		ws := q.watchers
		q.mu.Unlock()
		for _, w := range ws {
			if !w.stopped.Load() {
				w.f(ev)
			}
		}
	}
}
