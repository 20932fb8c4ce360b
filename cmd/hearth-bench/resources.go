package main

import (
	"bufio"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"
)

// procStatusKB reads a "VmRSS:   1234 kB" style field of /proc/<pid>/status.
func procStatusKB(pid int, field string) (int64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		name, rest, ok := strings.Cut(sc.Text(), ":")
		if !ok || name != field {
			continue
		}
		v := strings.Fields(rest)
		if len(v) == 0 {
			break
		}
		return strconv.ParseInt(v[0], 10, 64)
	}
	return 0, fmt.Errorf("/proc/%d/status has no %s", pid, field)
}

// rssSampler records a process's resident memory: once when idle, and the
// peak over the run (the kernel's VmHWM plus our own samples, in case the
// process resets it).
type rssSampler struct {
	pid    int
	mu     sync.Mutex
	idleKB int64
	peakKB int64
	winKB  int64 // peak since the last takeWindow
	err    error
	stop   chan struct{}
	done   chan struct{}
}

// startRSS samples pid every 100 ms until stopped.
func startRSS(pid int) *rssSampler {
	s := &rssSampler{pid: pid, stop: make(chan struct{}), done: make(chan struct{})}
	s.idleKB, s.err = procStatusKB(pid, "VmRSS")
	s.peakKB = s.idleKB
	go func() {
		defer close(s.done)
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-s.stop:
				return
			case <-t.C:
				if kb, err := procStatusKB(pid, "VmRSS"); err == nil {
					s.mu.Lock()
					s.peakKB = max(s.peakKB, kb)
					s.winKB = max(s.winKB, kb)
					s.mu.Unlock()
				}
			}
		}
	}()
	return s
}

// takeWindow returns the peak RSS in MB since the previous call (so each
// workload can tell what it cost) and starts a new window.
func (s *rssSampler) takeWindow() float64 {
	kb, _ := procStatusKB(s.pid, "VmRSS")
	s.mu.Lock()
	defer s.mu.Unlock()
	peak := max(s.winKB, kb)
	s.winKB = kb
	return float64(peak) / 1024
}

// finish stops sampling and returns idle and peak RSS in MB.
func (s *rssSampler) finish() (idleMB, peakMB float64, err error) {
	close(s.stop)
	<-s.done
	if hwm, err := procStatusKB(s.pid, "VmHWM"); err == nil {
		s.peakKB = max(s.peakKB, hwm)
	}
	return float64(s.idleKB) / 1024, float64(s.peakKB) / 1024, s.err
}

// diskUsage sums the sizes of the database files (SQLite *.db, -wal, -shm)
// and of the media directory under a data directory, in MB.
func diskUsage(dataDir string) (dbMB, mediaMB, totalMB float64, err error) {
	var db, media, total int64
	err = filepath.WalkDir(dataDir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			return nil
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dataDir, path)
		total += info.Size()
		switch {
		case strings.HasPrefix(rel, "media"+string(filepath.Separator)):
			media += info.Size()
		case strings.Contains(d.Name(), ".db"):
			db += info.Size()
		}
		return nil
	})
	const mb = 1 << 20
	return float64(db) / mb, float64(media) / mb, float64(total) / mb, err
}

// machine names the computer the figures come from.
type machine struct {
	CPUs      int    `json:"cpus"`
	CPUModel  string `json:"cpu_model"`
	GoVersion string `json:"go_version"`
	OS        string `json:"os"`
}

func thisMachine() machine {
	m := machine{CPUs: runtime.NumCPU(), GoVersion: runtime.Version(), OS: runtime.GOOS + "/" + runtime.GOARCH}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPUModel = strings.TrimSpace(v)
				break
			}
		}
	}
	return m
}
