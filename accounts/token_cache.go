package accounts

import (
	"sync"
	"time"

	"github.com/hearth-matrix/hearth/storage"
)

// tokenCacheTTL is how long a resolved access token is trusted without
// asking the database. Every revocation (logout, device deletion, password
// change with logout, deactivation, refresh rotation, re-login with the
// same device ID) drops the user's entries as it commits, here and, by
// Accounts.TokensRevoked, in other processes sharing the database; the TTL
// bounds what a lost notification could leave behind.
const tokenCacheTTL = 10 * time.Second

// tokenCacheMax bounds the entries; when full, the cache is emptied (the
// next request of each client reloads its entry).
const tokenCacheMax = 10_000

// tokenCache maps access-token hashes to their owners, so authenticating
// a request does not cost a database read (8% of a message send's CPU).
// Tokens on their first use after a refresh are never cached: that use
// revokes the previous generation in the database.
type tokenCache struct {
	mu      sync.Mutex
	entries map[string]tokenEntry      // token hash → owner
	byUser  map[string]map[string]bool // user → token hashes
	// hits and misses count get's answers, for the metrics.
	hits, misses int64
}

type tokenEntry struct {
	owner   storage.TokenOwner
	expires time.Time
}

func (c *tokenCache) get(hash string, now time.Time) (storage.TokenOwner, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.entries[hash]
	if !ok || now.After(e.expires) {
		c.misses++
		return storage.TokenOwner{}, false
	}
	c.hits++
	return e.owner, true
}

// TokenCacheStats are the hits and misses of the access-token cache.
func (a *Accounts) TokenCacheStats() (hits, misses int64) {
	a.tokens.mu.Lock()
	defer a.tokens.mu.Unlock()
	return a.tokens.hits, a.tokens.misses
}

func (c *tokenCache) put(hash string, owner storage.TokenOwner, now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.entries == nil || len(c.entries) >= tokenCacheMax {
		c.entries, c.byUser = map[string]tokenEntry{}, map[string]map[string]bool{}
	}
	c.entries[hash] = tokenEntry{owner: owner, expires: now.Add(tokenCacheTTL)}
	set := c.byUser[owner.UserID]
	if set == nil {
		set = map[string]bool{}
		c.byUser[owner.UserID] = set
	}
	set[hash] = true
}

// clear forgets every cached token.
func (c *tokenCache) clear() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.entries, c.byUser = nil, nil
}

// dropUser forgets every cached token of a user.
func (c *tokenCache) dropUser(userID string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for hash := range c.byUser[userID] {
		delete(c.entries, hash)
	}
	delete(c.byUser, userID)
}
