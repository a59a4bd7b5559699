// Package procs runs the consumer (and other programs) as separate
// processes for the crash, e2e and local-stack code: so they can be killed
// with SIGKILL, and never outlive the process that started them.
package procs

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/spaces-authz/spaces-authz/internal/testrig/spicedbtest"
)

// BuildConsumer compiles cmd/consumer into dir, with the crash points the
// crash tests use (build tag crashpoints), and returns the binary.
func BuildConsumer(dir string) (string, error) {
	root, err := spicedbtest.RepoRoot()
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "consumer")
	cmd := exec.Command("go", "build", "-tags", "crashpoints", "-o", bin, "./cmd/consumer")
	cmd.Dir = root
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("procs: build consumer: %w\n%s", err, out.String())
	}
	return bin, nil
}

// Proc is a running child process.
type Proc struct {
	Cmd     *exec.Cmd
	done    chan struct{}
	logPath string
	mu      sync.Mutex
	waitErr error
}

// Start runs bin with args and extra environment; its output goes to
// logPath (appended) and, when tee is non-nil, to tee too.
func Start(bin string, args, env []string, logPath string, tee io.Writer) (*Proc, error) {
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), env...)
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return nil, fmt.Errorf("procs: log: %w", err)
	}
	var w io.Writer = logf
	if tee != nil {
		w = io.MultiWriter(logf, tee)
	}
	cmd.Stdout, cmd.Stderr = w, w
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("procs: start %s: %w", filepath.Base(bin), err)
	}
	p := &Proc{Cmd: cmd, done: make(chan struct{}), logPath: logPath}
	go func() {
		err := cmd.Wait()
		logf.Close()
		p.mu.Lock()
		p.waitErr = err
		p.mu.Unlock()
		close(p.done)
	}()
	return p, nil
}

// Done is closed when the process has exited.
func (p *Proc) Done() <-chan struct{} { return p.done }

// Running reports whether the process is still alive.
func (p *Proc) Running() bool {
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// Kill sends SIGKILL and waits for the exit.
func (p *Proc) Kill() {
	_ = p.Cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
}

// Stop sends SIGTERM and waits up to grace, then SIGKILL. It returns the
// process's exit error (nil for a clean exit 0).
func (p *Proc) Stop(grace time.Duration) error {
	_ = p.Cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(grace):
		p.Kill()
		return errors.New("procs: did not stop within the grace period; killed")
	}
	return p.ExitErr()
}

// ExitErr is what Wait returned (after Done).
func (p *Proc) ExitErr() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.waitErr
}

// Signaled reports whether the process died from a signal.
func (p *Proc) Signaled() bool {
	ws, ok := p.Cmd.ProcessState.Sys().(syscall.WaitStatus)
	return ok && ws.Signaled()
}

// Output returns the log so far.
func (p *Proc) Output() string {
	b, _ := os.ReadFile(p.logPath)
	return string(b)
}
