package main

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"fmt"
	"io"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // the PostgreSQL driver, for the schema of a group
)

// group is several Hearth processes on one PostgreSQL database behind
// nginx, round robin and without sticky sessions, as docs/operations.md
// describes: the balancer's URL is the target.
type group struct {
	url      string
	bin      string
	dataDir  string
	dbURL    string
	adminURL string // the database URL without the group's schema
	schema   string
	hashCost int
	procs    []*startedHearth
	addrs    []string
	logs     []string
	nginx    *exec.Cmd
	nginxEnd chan struct{}

	mu     sync.Mutex
	killed int // index of the process killed with SIGKILL, -1 if none
}

// startGroup starts n processes of bin on a fresh schema of the PostgreSQL
// database pgURL, and nginx in front of them.
func startGroup(ctx context.Context, bin, pgURL, workDir string, idx, n, hashCost int, logTo io.Writer) (*group, error) {
	var rb [4]byte
	_, _ = rand.Read(rb[:])
	g := &group{bin: bin, hashCost: hashCost, killed: -1, adminURL: pgURL,
		schema:  "hearth_bench_" + hex.EncodeToString(rb[:]),
		dataDir: filepath.Join(workDir, fmt.Sprintf("group%d-data", idx))}
	admin, err := sql.Open("pgx", pgURL)
	if err != nil {
		return nil, err
	}
	_, err = admin.ExecContext(ctx, "CREATE SCHEMA "+g.schema)
	admin.Close()
	if err != nil {
		return nil, fmt.Errorf("creating the schema of the group: %w", err)
	}
	sep := "?"
	if strings.Contains(pgURL, "?") {
		sep = "&"
	}
	g.dbURL = pgURL + sep + "search_path=" + g.schema
	for i := range n {
		port, err := freePort()
		if err != nil {
			g.stop()
			return nil, err
		}
		addr := "127.0.0.1:" + strconv.Itoa(port)
		logPath := filepath.Join(workDir, fmt.Sprintf("group%d-hearth%d.log", idx, i))
		// One at a time: the first makes the schema and the signing key
		// the others share.
		h, err := launchHearth(ctx, bin, g.dataDir, addr, logPath, hashCost, "--database-url", g.dbURL)
		if err != nil {
			g.stop()
			return nil, err
		}
		g.procs, g.addrs, g.logs = append(g.procs, h), append(g.addrs, addr), append(g.logs, logPath)
	}
	if err := g.startNginx(ctx, filepath.Join(workDir, fmt.Sprintf("group%d-nginx", idx)), logTo); err != nil {
		g.stop()
		return nil, err
	}
	return g, nil
}

// startNginx runs nginx in the foreground with a configuration of its own:
// round robin over the processes, no stickiness; a process that does not
// answer is left out for 2 s, and an idempotent request (a GET) that found
// it dead goes to the next one.
func (g *group) startNginx(ctx context.Context, dir string, logTo io.Writer) error {
	bin, err := exec.LookPath("nginx")
	if err != nil {
		if _, serr := os.Stat("/usr/sbin/nginx"); serr != nil {
			return fmt.Errorf("several processes need nginx as the balancer (apt-get install nginx): %w", err)
		}
		bin = "/usr/sbin/nginx"
	}
	if err := os.MkdirAll(filepath.Join(dir, "tmp"), 0o755); err != nil {
		return err
	}
	port, err := freePort()
	if err != nil {
		return err
	}
	var servers strings.Builder
	for _, a := range g.addrs {
		fmt.Fprintf(&servers, "    server %s max_fails=1 fail_timeout=2s;\n", a)
	}
	user := ""
	if os.Geteuid() == 0 {
		user = "user root;\n"
	}
	conf := fmt.Sprintf(`%sworker_processes 1;
daemon off;
pid %[2]s/nginx.pid;
error_log %[2]s/error.log warn;
events { worker_connections 8192; }
http {
  access_log off;
  client_body_temp_path %[2]s/tmp/body;
  proxy_temp_path %[2]s/tmp/proxy;
  fastcgi_temp_path %[2]s/tmp/fastcgi;
  uwsgi_temp_path %[2]s/tmp/uwsgi;
  scgi_temp_path %[2]s/tmp/scgi;
  upstream hearth {
%[3]s    keepalive 256;
  }
  server {
    listen 127.0.0.1:%[4]d;
    client_max_body_size 50m;
    location / {
      proxy_pass http://hearth;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host $host;
      proxy_set_header X-Forwarded-For $remote_addr;
      proxy_read_timeout 120s;
      proxy_buffering off;
      proxy_next_upstream error timeout;
    }
  }
}
`, user, dir, servers.String(), port)
	confPath := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o644); err != nil {
		return err
	}
	cmd := exec.Command(bin, "-c", confPath, "-p", dir, "-e", filepath.Join(dir, "error.log"))
	cmd.Stdout, cmd.Stderr = logTo, logTo
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting nginx: %w", err)
	}
	g.nginx, g.nginxEnd = cmd, make(chan struct{})
	go func() { _ = cmd.Wait(); close(g.nginxEnd) }()
	g.url = "http://127.0.0.1:" + strconv.Itoa(port)
	h := &startedHearth{url: g.url, exited: g.nginxEnd}
	if err := h.waitReady(ctx, 20*time.Second); err != nil {
		return fmt.Errorf("nginx: %w (log: %s)", err, filepath.Join(dir, "error.log"))
	}
	return nil
}

// killOne kills the first process with SIGKILL, as a crash would, and
// returns its index (-1 with one process or one already killed). The first
// started first, so the first time it is the leader (docs/operations.md).
func (g *group) killOne() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	if len(g.procs) < 2 || g.killed >= 0 {
		return -1
	}
	i := 0
	_ = g.procs[i].cmd.Process.Kill()
	<-g.procs[i].exited
	g.killed = i
	return i
}

// restartKilled starts the killed process again on its address.
func (g *group) restartKilled(ctx context.Context) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.killed < 0 {
		return nil
	}
	i := g.killed
	h, err := launchHearth(ctx, g.bin, g.dataDir, g.addrs[i], g.logs[i], g.hashCost, "--database-url", g.dbURL)
	if err != nil {
		return err
	}
	g.procs[i], g.killed = h, -1
	// nginx leaves a failed process out for fail_timeout: give it back.
	time.Sleep(2500 * time.Millisecond)
	return nil
}

// stop stops nginx and the processes and drops the schema.
func (g *group) stop() {
	if g.nginx != nil {
		_ = g.nginx.Process.Signal(syscall.SIGQUIT)
		select {
		case <-g.nginxEnd:
		case <-time.After(5 * time.Second):
			_ = g.nginx.Process.Kill()
			<-g.nginxEnd
		}
	}
	for i, h := range g.procs {
		if i != g.killed {
			h.stop()
		}
	}
	if admin, err := sql.Open("pgx", g.adminURL); err == nil {
		_, _ = admin.Exec("DROP SCHEMA " + g.schema + " CASCADE")
		admin.Close()
	}
}

// saveLogs copies the processes' logs and nginx's error log into dir.
func (g *group) saveLogs(dir string) {
	paths := append([]string{}, g.logs...)
	if g.nginx != nil {
		paths = append(paths, filepath.Join(filepath.Dir(g.nginx.Args[2]), "error.log"))
	}
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		name := filepath.Base(p)
		if name == "error.log" {
			name = filepath.Base(filepath.Dir(p)) + "-error.log"
		}
		_ = os.WriteFile(filepath.Join(dir, name), b, 0o644)
	}
}

// groupSpec is one entry of --processes: a count, and whether one of the
// processes is killed halfway through each workload ("3k").
type groupSpec struct {
	n    int
	kill bool
}

// groupSizes parses --processes.
func groupSizes(s string) ([]groupSpec, error) {
	var out []groupSpec
	for _, v := range splitList(s) {
		kill := strings.HasSuffix(v, "k")
		n, err := strconv.Atoi(strings.TrimSuffix(v, "k"))
		if err != nil || n < 1 || n > 16 || (kill && n < 2) {
			return nil, fmt.Errorf("--processes %q: counts from 1 to 16, a k after a count of 2 or more to kill one", s)
		}
		out = append(out, groupSpec{n, kill})
	}
	return out, nil
}

// redactedURL is a database URL without its password, for logs.
func redactedURL(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return "(database URL)"
	}
	return u.Redacted()
}
