package proxy

import (
	"sync"
	"time"
)

// negCache remembers upstream 404s on this node only (never replicated):
// at most max paths, each until its deadline. When full, expired paths are
// dropped first, then arbitrary ones, down to three quarters of max (so
// the cost of a full sweep is spread over many additions). Safe for
// concurrent use.
type negCache struct {
	max int

	mu    sync.RWMutex
	until map[string]time.Time
}

func newNegCache(max int) *negCache {
	return &negCache{max: max, until: map[string]time.Time{}}
}

// has reports whether k is remembered as missing at now.
func (c *negCache) has(k string, now time.Time) bool {
	c.mu.RLock()
	u, ok := c.until[k]
	c.mu.RUnlock()
	return ok && now.Before(u)
}

// add remembers k as missing until until.
func (c *negCache) add(k string, until time.Time, now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.until[k]; !ok && len(c.until) >= c.max {
		for x, u := range c.until {
			if !now.Before(u) {
				delete(c.until, x)
			}
		}
		for x := range c.until {
			if len(c.until) <= c.max*3/4 {
				break
			}
			delete(c.until, x)
		}
	}
	c.until[k] = until
}

// len is the number of remembered paths.
func (c *negCache) len() int {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return len(c.until)
}
