package quicroute

import "time"

// lru is a map whose entries are also kept in a list ordered by deadline,
// oldest first, so expiry and eviction are O(1) per entry. Deadlines only
// ever move to the back of the list: every entry of one lru uses the same
// timeout, so refreshing an entry means moving it to the back.
type lru[V any] struct {
	m    map[string]*lruEntry[V]
	root lruEntry[V] // sentinel: root.next is the oldest, root.prev the newest
}

type lruEntry[V any] struct {
	key        string
	val        V
	deadline   time.Time
	prev, next *lruEntry[V]
}

func (l *lru[V]) init() {
	l.m = make(map[string]*lruEntry[V])
	l.root.next, l.root.prev = &l.root, &l.root
}

func (l *lru[V]) len() int { return len(l.m) }

// get looks key up without allocating (the compiler does not copy the
// bytes for a map index with a string conversion).
func (l *lru[V]) get(key []byte) *lruEntry[V] { return l.m[string(key)] }

// oldest returns the entry with the earliest deadline, or nil.
func (l *lru[V]) oldest() *lruEntry[V] {
	if l.root.next == &l.root {
		return nil
	}
	return l.root.next
}

// add inserts key, which must not be present, as the newest entry.
func (l *lru[V]) add(key []byte, v V, deadline time.Time) *lruEntry[V] {
	e := &lruEntry[V]{key: string(key), val: v, deadline: deadline}
	l.m[e.key] = e
	l.pushBack(e)
	return e
}

// touch gives e a new, later deadline.
func (l *lru[V]) touch(e *lruEntry[V], deadline time.Time) {
	e.deadline = deadline
	l.unlink(e)
	l.pushBack(e)
}

func (l *lru[V]) remove(e *lruEntry[V]) {
	delete(l.m, e.key)
	l.unlink(e)
}

func (l *lru[V]) pushBack(e *lruEntry[V]) {
	e.prev, e.next = l.root.prev, &l.root
	e.prev.next, l.root.prev = e, e
}

func (l *lru[V]) unlink(e *lruEntry[V]) {
	e.prev.next, e.next.prev = e.next, e.prev
	e.prev, e.next = nil, nil
}
