// A vcsim (govmomi simulator) for vbproxy's conformance tests, built in GOPATH mode from
// Debian's golang-github-vmware-govmomi-dev. It serves the VPX model over TLS, prints one JSON
// line (URL, credentials, SHA-256 certificate fingerprint) and runs until stdin closes, so it
// never outlives the test process that started it.
package main

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"io/ioutil"
	"os"
	"strings"
	"time"

	"github.com/vmware/govmomi"
	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/simulator"
)

// addNestedFolder creates DC0/vm/conformance/nested (the suite's NESTED_FOLDER) through the API,
// as an administrator would; the VPX model has no VM folders of its own.
func addNestedFolder(s *simulator.Server) error {
	ctx := context.Background()
	c, err := govmomi.NewClient(ctx, s.URL, true)
	if err != nil {
		return err
	}
	defer func() { _ = c.Logout(ctx) }()
	dc := simulator.Map.Any("Datacenter").(*simulator.Datacenter)
	parent := object.NewFolder(c.Client, dc.VmFolder)
	for _, name := range []string{"conformance", "nested"} {
		if parent, err = parent.CreateFolder(ctx, name); err != nil {
			return err
		}
	}
	return nil
}

func main() {
	idle := flag.Duration("session-idle", 0, "expire sessions idle longer than this (0: never)")
	flag.Parse()

	model := simulator.VPX()
	defer model.Remove()
	if err := model.Create(); err != nil {
		fmt.Fprintln(os.Stderr, "vcsim:", err)
		os.Exit(1)
	}
	if *idle > 0 {
		simulator.SessionIdleTimeout = *idle
	}
	model.Service.TLS = new(tls.Config)
	s := model.Service.NewServer()
	defer s.Close()
	if err := addNestedFolder(s); err != nil {
		fmt.Fprintln(os.Stderr, "vcsim: creating the nested folder:", err)
		os.Exit(1)
	}

	sum := sha256.Sum256(s.Certificate().Raw)
	hex := make([]string, len(sum))
	for i, b := range sum {
		hex[i] = fmt.Sprintf("%02X", b)
	}
	pass, _ := s.URL.User.Password()
	u := *s.URL
	u.User = nil
	out, _ := json.Marshal(map[string]string{
		"url":            u.String(),
		"username":       s.URL.User.Username(),
		"password":       pass,
		"fingerprint256": strings.Join(hex, ":"),
		"started":        time.Now().UTC().Format(time.RFC3339),
	})
	fmt.Println(string(out))
	_, _ = io.Copy(ioutil.Discard, os.Stdin)
}
