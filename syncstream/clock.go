package syncstream

import "time"

// clock hands out typing and presence positions, which live in memory: the
// wall clock in milliseconds, or one more than the last position when that
// is later, so that positions survive a restart. Processes sharing a
// PostgreSQL database take them from the database instead, in one order for
// all (storage.DB.NotifyOrdered), and the clock follows: remote keeps such
// a position, and one more than the last for one that arrives late.
type clock struct {
	last int64
}

// local is the position of a change made here alone.
func (c *clock) local(now time.Time) int64 {
	c.last = max(c.last+1, now.UnixMilli())
	return c.last
}

// remote is the position of a change ordered at pos.
func (c *clock) remote(pos int64) int64 {
	c.last = max(c.last+1, pos)
	return c.last
}
