package hearthtest

import (
	"os"
	"os/exec"
	"testing"
)

// Chromium is the path of a headless-capable Chromium for browser tests.
// Without one the test is skipped, except in CI (CI=true, where .ci/run
// installs it), where that fails it.
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
