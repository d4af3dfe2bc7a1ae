package server_test

import (
	"crypto/rand"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/parley-chat/parley/storage"
)

var (
	s3Once     sync.Once
	s3Endpoint string
	s3Err      error
	s3Stop     = func() {}
)

// stopS3 stops the private S3 server, if one was started, and deletes its
// files.
func stopS3() { s3Stop() }

const (
	s3AccessKey = "parleytest"
	s3SecretKey = "parleytestsecret"
)

// s3Config returns an S3 configuration with a bucket of its own on a private
// versitygw server, which the test binary starts on first use and which dies
// with it. scripts/ensure-test-tools.sh (run by make test) installs the
// server; without it the test fails, saying so.
func s3Config(t testing.TB) storage.S3Config {
	t.Helper()
	s3Once.Do(func() { s3Endpoint, s3Err = startVersity() })
	if s3Err != nil {
		t.Fatalf("S3 test server: %v", s3Err)
	}
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return storage.S3Config{
		Endpoint:  s3Endpoint,
		Bucket:    fmt.Sprintf("parley-test-%x", b),
		AccessKey: s3AccessKey,
		SecretKey: s3SecretKey,
		Region:    "us-east-1",
		PathStyle: true,
	}
}

func versityBinary() (string, error) {
	if p, err := exec.LookPath("versitygw"); err == nil {
		return p, nil
	}
	out, err := exec.Command("go", "env", "GOPATH").Output()
	if err == nil {
		p := filepath.Join(strings.TrimSpace(string(out)), "bin", "versitygw")
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("versitygw is not installed: run scripts/ensure-test-tools.sh (make test does)")
}

func startVersity() (string, error) {
	bin, err := versityBinary()
	if err != nil {
		return "", err
	}
	dir, err := os.MkdirTemp("", "parley-s3-")
	if err != nil {
		return "", err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	addr := ln.Addr().String()
	ln.Close()
	cmd := exec.Command(bin, "--port", addr, "--access", s3AccessKey, "--secret", s3SecretKey, "posix", dir)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return "", fmt.Errorf("start versitygw: %w", err)
	}
	for range 200 {
		if c, err := net.DialTimeout("tcp", addr, 100*time.Millisecond); err == nil {
			c.Close()
			s3Stop = func() { _ = cmd.Process.Kill(); _ = cmd.Wait(); _ = os.RemoveAll(dir) }
			return "http://" + addr, nil
		}
		time.Sleep(25 * time.Millisecond)
	}
	_ = cmd.Process.Kill()
	_ = os.RemoveAll(dir)
	return "", fmt.Errorf("versitygw on %s did not answer", addr)
}
