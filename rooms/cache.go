package rooms

import (
	"container/list"
	"sync"
	"sync/atomic"

	"github.com/hearth-matrix/hearth/storage"
)

// lru is a small least-recently-used map, safe for concurrent use, bounded
// by the total weight of its values (their approximate size), not their
// count: the values of one cache differ in size by orders of magnitude
// (the state of a 2-member room and of a 1,000-member one).
type lru[K comparable, V any] struct {
	mu     sync.Mutex
	max    int // total weight
	total  int
	weight func(V) int
	ll     *list.List
	items  map[K]*list.Element
	// hits and misses count get's answers, for the metrics.
	hits, misses atomic.Int64
}

type lruEntry[K comparable, V any] struct {
	key    K
	val    V
	weight int
}

func newLRU[K comparable, V any](max int, weight func(V) int) *lru[K, V] {
	return &lru[K, V]{max: max, weight: weight, ll: list.New(), items: map[K]*list.Element{}}
}

func (c *lru[K, V]) get(k K) (V, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.items[k]; ok {
		c.ll.MoveToFront(el)
		c.hits.Add(1)
		return el.Value.(*lruEntry[K, V]).val, true
	}
	c.misses.Add(1)
	var zero V
	return zero, false
}

func (c *lru[K, V]) put(k K, v V) {
	c.mu.Lock()
	defer c.mu.Unlock()
	w := c.weight(v)
	if w > c.max {
		// Larger than the whole cache. A value may push out most of the
		// others: the state of a room of 50,000 state events is half the
		// snapshot cache, and loading it for each of the room's events
		// instead (as when anything over a quarter was refused) cost
		// more than all the rest of a send.
		return
	}
	if el, ok := c.items[k]; ok {
		e := el.Value.(*lruEntry[K, V])
		c.total += w - e.weight
		e.val, e.weight = v, w
		c.ll.MoveToFront(el)
	} else {
		c.items[k] = c.ll.PushFront(&lruEntry[K, V]{k, v, w})
		c.total += w
	}
	for c.total > c.max {
		c.removeElement(c.ll.Back())
	}
}

func (c *lru[K, V]) removeElement(el *list.Element) {
	e := el.Value.(*lruEntry[K, V])
	c.ll.Remove(el)
	delete(c.items, e.key)
	c.total -= e.weight
}

func (c *lru[K, V]) remove(k K) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.items[k]; ok {
		c.removeElement(el)
	}
}

func (c *lru[K, V]) clear() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.ll.Init()
	c.items = map[K]*list.Element{}
	c.total = 0
}

// snapshotCache maps snapshot IDs to full state. Snapshots never change once
// committed, so entries never go stale, even across processes.
type snapshotCache = lru[int64, *snapshot]

type snapshot struct {
	id    int64
	info  storage.SnapshotInfo
	state map[storage.StateKey]string // read-only once cached
}

// newSnapshotCache holds at most maxEntries state entries in all.
func newSnapshotCache(maxEntries int) *snapshotCache {
	return newLRU[int64](maxEntries, func(s *snapshot) int { return len(s.state) + 1 })
}

// pduCache maps event IDs to parsed events. Cached events are never mutated:
// a redaction evicts the entry.
type pduCache = lru[string, *Event]

// newPDUCache holds events of about maxBytes in all: a parsed event keeps
// its JSON and decoded copies of parts of it, weighed as twice the JSON
// plus a fixed overhead.
func newPDUCache(maxBytes int) *pduCache {
	return newLRU[string](maxBytes, func(ev *Event) int { return 2*len(ev.JSON) + 512 })
}

// CacheStats are the hits and misses of one cache since start.
type CacheStats struct{ Hits, Misses int64 }

// CacheStats reports the room core's caches: parsed events ("events"),
// state snapshots ("state"), and the timelines ("recent") and bundled
// aggregations ("bundles") the syncs at one position share.
func (r *Rooms) CacheStats() map[string]CacheStats {
	return map[string]CacheStats{
		"events":  {r.pdus.hits.Load(), r.pdus.misses.Load()},
		"state":   {r.snapshots.hits.Load(), r.snapshots.misses.Load()},
		"bundles": {r.bundles.hits.Load(), r.bundles.misses.Load()},
		"recent":  {r.recents.hits.Load(), r.recents.misses.Load()},
	}
}

// Caches shared by the syncs at one stream position (a sync's events
// position, or a leave event's): the members of a room woken by one
// message read its timeline and its bundled aggregations once, not once
// each. Both answers are of the events up to the position: the timeline
// range ends there, and a bundle counts the children up to it (a child
// after it comes in the sync's next timeline). Every event at or before
// such a position committed before any sync could use it (events commit
// in stream order and a position is announced after its commit), so the
// first sync at a position reads what every later one would. What
// changes such an answer afterwards is a redaction (of an event or of a
// child, which cuts it off), a purge or a partial-state resync changing
// an event: each bumps sharedGen (ForgetEvents, also run for the relay's
// news of another process's redactions, and cache), and an entry read
// before the bump is never served after it.

// bundleCache holds events' bundles by event and position.
type bundleCache = lru[bundleKey, bundleEntry]

type bundleKey struct {
	eventID string
	pos     int64
}

type bundleEntry struct {
	gen    uint64 // sharedGen when its reading began
	bundle *bundle
}

// bundleCacheWeight bounds the cache: an entry weighs 1 plus the thread
// senders and references it holds (bundled events are shared with the
// event cache). Most entries are events without children.
const bundleCacheWeight = 20_000

func newBundleCache() *bundleCache {
	return newLRU[bundleKey](bundleCacheWeight, func(e bundleEntry) int {
		w := 1
		if b := e.bundle; b != nil {
			w += len(b.refs)
			if b.thread != nil {
				w += len(b.thread.Senders)
			}
		}
		return w
	})
}

// cachedBundle is the bundle of eventID for a sync at pos, if one read
// since the last invalidation (gen) is cached. pos 0: not cached.
func (r *Rooms) cachedBundle(eventID string, pos int64, gen uint64) (*bundle, bool) {
	if pos <= 0 || r.bundles == nil {
		return nil, false
	}
	e, ok := r.bundles.get(bundleKey{eventID, pos})
	if !ok || e.gen != gen {
		return nil, false
	}
	return e.bundle, true
}

// recentCache holds Recent's answers by room, range and limit.
type recentCache = lru[recentKey, recentEntry]

type recentKey struct {
	roomID   string
	from, to int64
	limit    int
}

type recentEntry struct {
	gen     uint64
	evs     []*Event // read-only: Recent hands out copies
	limited bool
}

// recentCacheBytes bounds the events recentCache holds, weighed as the
// event cache weighs them; a fan-out's entry is one small event.
const recentCacheBytes = 4 << 20

func newRecentCache() *recentCache {
	return newLRU[recentKey](recentCacheBytes, func(e recentEntry) int {
		w := 64
		for _, ev := range e.evs {
			w += 2*len(ev.JSON) + 512
		}
		return w
	})
}

// forgetShared retires every entry of the shared caches: after the bump,
// entries read before it are never served, even one whose reading is
// still running.
func (r *Rooms) forgetShared() {
	r.sharedGen.Add(1)
	if r.bundles != nil {
		r.bundles.clear()
	}
	if r.recents != nil {
		r.recents.clear()
	}
}
