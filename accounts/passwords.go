package accounts

import (
	"context"
	"fmt"
	"sync"

	"golang.org/x/crypto/bcrypt"
)

// Passwords hashes and checks passwords with bcrypt. Each hash takes tens of
// milliseconds of CPU, so at most a few run at once: a login flood queues
// instead of exhausting CPU and memory.
type Passwords struct {
	cost  int
	slots chan struct{}
	// dummyHash is checked against when a user does not exist, so a wrong
	// user name costs the same time as a wrong password. Made on first use:
	// at cost 12 it takes a quarter of a second.
	dummyOnce sync.Once
	dummyHash []byte
}

// NewPasswords returns a hasher with the given bcrypt cost and concurrency.
func NewPasswords(cost, concurrency int) *Passwords {
	if concurrency < 1 {
		concurrency = 1
	}
	return &Passwords{cost: cost, slots: make(chan struct{}, concurrency)}
}

// Cost is the bcrypt cost in use.
func (p *Passwords) Cost() int { return p.cost }

func (p *Passwords) acquire(ctx context.Context) error {
	select {
	case p.slots <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (p *Passwords) release() { <-p.slots }

// Hash returns the bcrypt hash of password.
func (p *Passwords) Hash(ctx context.Context, password string) (string, error) {
	if err := p.acquire(ctx); err != nil {
		return "", err
	}
	defer p.release()
	// bcrypt reads at most 72 bytes; longer passwords are refused by the
	// library rather than silently truncated.
	h, err := bcrypt.GenerateFromPassword([]byte(password), p.cost)
	if err != nil {
		return "", fmt.Errorf("hashing password: %w", err)
	}
	return string(h), nil
}

// Check reports whether password matches hash. An empty hash (no such user,
// or no password set) is checked against a dummy so timing does not tell.
func (p *Passwords) Check(ctx context.Context, hash, password string) (bool, error) {
	if err := p.acquire(ctx); err != nil {
		return false, err
	}
	defer p.release()
	if hash == "" {
		p.dummyOnce.Do(func() {
			p.dummyHash, _ = bcrypt.GenerateFromPassword([]byte("hearth-dummy-password"), p.cost)
		})
		_ = bcrypt.CompareHashAndPassword(p.dummyHash, []byte(password))
		return false, nil
	}
	return bcrypt.CompareHashAndPassword([]byte(hash), []byte(password)) == nil, nil
}
