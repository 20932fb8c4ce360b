// Package browsertest drives a headless Chromium in tests with chromedp
// (a package of its own, so that only browser tests link chromedp).
package browsertest

import (
	"context"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// Chromium is the path of a headless-capable Chromium. Without one the test
// is skipped, except in CI (CI=true, where .ci/run installs it), where that
// fails it.
func Chromium(t testing.TB) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("chromium is not installed (apt-get install -y chromium); CI must run this test")
	}
	t.Skip("chromium is not installed (apt-get install -y chromium): skipping the browser test")
	return ""
}

// Browser is one tab of a headless Chromium, closed with the test.
type Browser struct {
	t testing.TB
	// Ctx is the tab's chromedp context, for actions with results.
	Ctx context.Context
}

// StepTimeout bounds each Run.
const StepTimeout = 30 * time.Second

// New starts Chromium (skipping or failing as Chromium says) with extra
// allocator options, e.g. chromedp.Flag("accept-lang", "en-US").
func New(t testing.TB, opts ...chromedp.ExecAllocatorOption) *Browser {
	t.Helper()
	all := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(Chromium(t)), chromedp.NoSandbox, chromedp.DisableGPU)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), append(all, opts...)...)
	ctx, cancel := chromedp.NewContext(actx)
	t.Cleanup(func() { cancel(); cancelAlloc() })
	// The browser starts on ctx, so that it outlives each step's timeout.
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("starting chromium: %v", err)
	}
	return &Browser{t: t, Ctx: ctx}
}

// Run runs the actions of one step; on failure it fails the test with
// where the tab is and what it shows.
func (b *Browser) Run(what string, actions ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.Ctx, StepTimeout)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		dctx, cancel := context.WithTimeout(b.Ctx, 5*time.Second)
		defer cancel()
		page, _ := chromedp.Run(dctx, chromedp.OuterHTML(chromedp.CSS("body"), chromedp.NodeReady))
		loc, _ := chromedp.Run(dctx, chromedp.Location())
		b.t.Fatalf("%s: %v\nat %s: %s", what, err, loc, page)
	}
}

// Text is the visible text of the first element matching sel, trimmed.
func (b *Browser) Text(sel chromedp.CSS) string {
	b.t.Helper()
	v, err := chromedp.Run(b.Ctx, chromedp.Text(sel))
	if err != nil {
		b.t.Fatalf("reading %s: %v", sel, err)
	}
	return strings.TrimSpace(v)
}

// Attribute is the value of an attribute of the first element matching
// sel; the test fails when it has none.
func (b *Browser) Attribute(sel chromedp.CSS, name string) string {
	b.t.Helper()
	v, err := chromedp.Run(b.Ctx, chromedp.AttributeValue(sel, name))
	if err != nil || !v.Exists {
		b.t.Fatalf("attribute %s of %s: %v", name, sel, err)
	}
	return v.Value
}
