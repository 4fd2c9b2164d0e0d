package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/spf13/pflag"
	"github.com/ternmq/tern/internal/config"
)

// adminClient calls a running broker's admin API for the commands that go
// through it (tern ban, tern cluster): its address and credentials come
// from the flags, or else from the broker's configuration.
type adminClient struct {
	config   string
	url      string
	token    string
	apiKey   string
	downHint string // added to the error when the broker does not answer
}

// addFlags adds the flags of the admin API's address and credentials.
func (o *adminClient) addFlags(pf *pflag.FlagSet) {
	pf.StringVarP(&o.config, "config", "c", "", "the broker's YAML configuration (default $TERN_CONFIG)")
	pf.StringVar(&o.url, "url", "", "admin API base URL (default: from admin.listen)")
	pf.StringVar(&o.token, "token", "", "admin API bearer token (default: admin.token)")
	pf.StringVar(&o.apiKey, "api-key", "", "admin API key as key:secret (default: the first of admin.api_keys)")
}

// loadConfig reads the broker's configuration as tern serve would, without
// its flags.
func (o *adminClient) loadConfig() (*config.Config, error) {
	file := o.config
	if file == "" {
		file = os.Getenv(config.EnvConfigFile)
	}
	return config.Load(file, os.Environ(), nil)
}

// call makes an admin API request and decodes the answer into out.
func (o *adminClient) call(ctx context.Context, method, path string, body []byte, out any) error {
	base, token, key, secret, err := o.endpoint()
	if err != nil {
		return err
	}
	if ctx == nil {
		ctx = context.Background()
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, strings.TrimSuffix(base, "/")+path, rd)
	if err != nil {
		return err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	switch {
	case token != "":
		req.Header.Set("Authorization", "Bearer "+token)
	case key != "":
		req.SetBasicAuth(key, secret)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("admin API: %w (is the broker running?%s)", err, o.downHint)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if resp.StatusCode/100 != 2 {
		var e struct {
			Error string `json:"error"`
		}
		json.Unmarshal(data, &e)
		if e.Error == "" {
			e.Error = strings.TrimSpace(string(data))
		}
		return fmt.Errorf("admin API: %s: %s", resp.Status, e.Error)
	}
	if out != nil {
		return json.Unmarshal(data, out)
	}
	return nil
}

// endpoint returns the admin API's base URL and credentials: the flags',
// or the configuration's.
func (o *adminClient) endpoint() (base, token, key, secret string, err error) {
	base, token = o.url, o.token
	if o.apiKey != "" {
		var ok bool
		if key, secret, ok = strings.Cut(o.apiKey, ":"); !ok {
			return "", "", "", "", errors.New("--api-key: want key:secret")
		}
	}
	if base != "" && (token != "" || key != "") {
		return base, token, key, secret, nil
	}
	cfg, err := o.loadConfig()
	if err != nil {
		return "", "", "", "", err
	}
	if base == "" {
		if cfg.Admin.Listen == "" {
			return "", "", "", "", errors.New("admin.listen is empty: the broker has no admin API (use --url, or --offline when it is stopped)")
		}
		base = adminBaseURL(cfg.Admin.Listen)
	}
	if token == "" && key == "" {
		if token = cfg.Admin.Token; token == "" && len(cfg.Admin.APIKeys) > 0 {
			key, secret = cfg.Admin.APIKeys[0].Key, cfg.Admin.APIKeys[0].Secret
		}
	}
	return base, token, key, secret, nil
}
