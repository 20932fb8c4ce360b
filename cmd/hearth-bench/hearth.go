package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"time"
)

// startedHearth is a Hearth that hearth-bench built and runs itself, in a
// temporary data directory, on a loopback port.
type startedHearth struct {
	url     string
	dataDir string
	cmd     *exec.Cmd
	exited  chan struct{} // closed when the process has exited
	exitErr error
}

// startHearth builds ./cmd/hearth in the source tree src (so two checkouts
// of different commits can be compared in one run) and starts it as the
// README does, with open registration and rate limits off.
func startHearth(ctx context.Context, src, workDir string, n int, hashCost int, logTo io.Writer) (*startedHearth, error) {
	bin := filepath.Join(workDir, fmt.Sprintf("hearth-%d", n))
	if err := buildHearth(ctx, src, bin, logTo); err != nil {
		return nil, err
	}
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	return launchHearth(ctx, bin, filepath.Join(workDir, fmt.Sprintf("data-%d", n)), "127.0.0.1:"+strconv.Itoa(port),
		filepath.Join(workDir, fmt.Sprintf("hearth-%d.log", n)), hashCost)
}

// buildHearth builds ./cmd/hearth of src into bin.
func buildHearth(ctx context.Context, src, bin string, logTo io.Writer) error {
	build := exec.CommandContext(ctx, "go", "build", "-o", bin, "./cmd/hearth")
	build.Dir = src
	build.Stdout, build.Stderr = logTo, logTo
	if err := build.Run(); err != nil {
		return fmt.Errorf("building Hearth in %s: %w", src, err)
	}
	return nil
}

// launchHearth starts bin on addr with dataDir, logging to logPath (which
// it appends to, so a process started again keeps its earlier log), and
// waits until it answers. extra are more serve flags (--database-url).
func launchHearth(ctx context.Context, bin, dataDir, addr, logPath string, hashCost int, extra ...string) (*startedHearth, error) {
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	args := append([]string{"serve", "--data-dir", dataDir, "--registration", "open", "--rate-limits", "off",
		"--listen", addr, "--federation-listen", "", "--bcrypt-cost", strconv.Itoa(hashCost), "--log-level", "warn"}, extra...)
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	// Its own process group, so a ^C to hearth-bench reaches us first and
	// we stop it in order.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return nil, fmt.Errorf("starting %s: %w", bin, err)
	}
	h := &startedHearth{url: "http://" + addr, dataDir: dataDir, cmd: cmd, exited: make(chan struct{})}
	go func() {
		h.exitErr = cmd.Wait()
		logFile.Close()
		close(h.exited)
	}()
	if err := h.waitReady(ctx, 60*time.Second); err != nil {
		h.stop()
		return nil, fmt.Errorf("%w (log: %s)", err, logPath)
	}
	return h, nil
}

func (h *startedHearth) waitReady(ctx context.Context, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) {
		select {
		case <-h.exited:
			return fmt.Errorf("Hearth exited at start: %v", h.exitErr)
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
		resp, err := http.Get(h.url + "/_matrix/client/versions")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
	}
	return fmt.Errorf("Hearth did not answer on %s within %s", h.url, limit)
}

// stop sends SIGTERM, and SIGKILL if Hearth has not exited after 10 s.
func (h *startedHearth) stop() {
	_ = h.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-h.exited:
	case <-time.After(10 * time.Second):
		_ = h.cmd.Process.Kill()
		<-h.exited
	}
}

func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("finding a free loopback port: %w", err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}
