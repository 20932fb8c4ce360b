package rooms

import (
	"container/list"
	"sync"

	"github.com/hearth-matrix/hearth/storage"
)

// lru is a small least-recently-used map, safe for concurrent use.
type lru[K comparable, V any] struct {
	mu    sync.Mutex
	max   int
	ll    *list.List
	items map[K]*list.Element
}

type lruEntry[K comparable, V any] struct {
	key K
	val V
}

func newLRU[K comparable, V any](max int) *lru[K, V] {
	return &lru[K, V]{max: max, ll: list.New(), items: map[K]*list.Element{}}
}

func (c *lru[K, V]) get(k K) (V, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.items[k]; ok {
		c.ll.MoveToFront(el)
		return el.Value.(*lruEntry[K, V]).val, true
	}
	var zero V
	return zero, false
}

func (c *lru[K, V]) put(k K, v V) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.items[k]; ok {
		el.Value.(*lruEntry[K, V]).val = v
		c.ll.MoveToFront(el)
		return
	}
	c.items[k] = c.ll.PushFront(&lruEntry[K, V]{k, v})
	if c.ll.Len() > c.max {
		last := c.ll.Back()
		c.ll.Remove(last)
		delete(c.items, last.Value.(*lruEntry[K, V]).key)
	}
}

func (c *lru[K, V]) remove(k K) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.items[k]; ok {
		c.ll.Remove(el)
		delete(c.items, k)
	}
}

// snapshotCache maps snapshot IDs to full state. Snapshots never change once
// committed, so entries never go stale, even across processes.
type snapshotCache = lru[int64, *snapshot]

type snapshot struct {
	id    int64
	info  storage.SnapshotInfo
	state map[storage.StateKey]string // read-only once cached
}

func newSnapshotCache(n int) *snapshotCache { return newLRU[int64, *snapshot](n) }

// pduCache maps event IDs to parsed events. Cached events are never mutated:
// a redaction evicts the entry.
type pduCache = lru[string, *Event]

func newPDUCache(n int) *pduCache { return newLRU[string, *Event](n) }
