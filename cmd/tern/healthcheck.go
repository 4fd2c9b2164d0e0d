package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"github.com/ternmq/tern/internal/config"
)

// healthcheckOptions are the flags of tern healthcheck besides serve's.
type healthcheckOptions struct {
	config  string
	url     string
	token   string
	apiKey  string
	timeout time.Duration
}

func healthcheckCmd() *cobra.Command { return newHealthcheckCmd(os.Environ) }

// newHealthcheckCmd returns tern healthcheck reading the environment from
// environ (tests give their own).
func newHealthcheckCmd(environ func() []string) *cobra.Command {
	var o healthcheckOptions
	cmd := &cobra.Command{
		Use:   "healthcheck [-c tern.yaml] [--url URL] [serve's flags]",
		Short: "Exit 0 when the broker is ready (/readyz answers 200), 1 otherwise",
		Long: `Ask the running broker's admin API whether it is ready: GET /readyz.
Exit status 0 when it answers 200; 1 when it answers anything else (503
while it restores its store or drains), or nothing within --timeout.

It is for images without curl (the Dockerfile's HEALTHCHECK) and for
scripts. The address is admin.listen, read as tern serve reads it: the
file of -c or $TERN_CONFIG, the TERN_ADMIN_… variables, and serve's own
flags (--admin-listen ...), so the same arguments work for both; a
wildcard address (0.0.0.0, [::]) is asked on loopback. --url overrides it.
Credentials (admin.token, else the first of admin.api_keys, or --token,
--api-key) are sent when configured.`,
		Example: `  tern healthcheck
  tern healthcheck -c /etc/tern/tern.yaml
  tern healthcheck --url http://127.0.0.1:18083/readyz --timeout 1s`,
		Args:         cobra.NoArgs,
		SilenceUsage: true,
		RunE: func(cmd *cobra.Command, _ []string) error {
			msg, err := o.check(cmd.Context(), environ(), cmd.Flags())
			if err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), msg)
			return nil
		},
	}
	fl := cmd.Flags()
	fl.SortFlags = false
	fl.StringVarP(&o.config, "config", "c", "", "YAML configuration file (default $TERN_CONFIG)")
	fl.StringVar(&o.url, "url", "", "readiness URL, or the admin API's base URL (default: from admin.listen)")
	fl.StringVar(&o.token, "token", "", "admin API bearer token (default: admin.token)")
	fl.StringVar(&o.apiKey, "api-key", "", "admin API key as key:secret (default: the first of admin.api_keys)")
	fl.DurationVar(&o.timeout, "timeout", 3*time.Second, "how long to wait for the answer")
	config.RegisterFlags(fl)
	return cmd
}

// check asks /readyz and returns what to print when it answered 200.
func (o *healthcheckOptions) check(ctx context.Context, environ []string, fs *pflag.FlagSet) (string, error) {
	target, token, key, secret, err := o.endpoint(environ, fs)
	if err != nil {
		return "", err
	}
	if ctx == nil {
		ctx = context.Background()
	}
	if o.timeout <= 0 {
		return "", errors.New("--timeout must be positive")
	}
	ctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, target, nil)
	if err != nil {
		return "", err
	}
	switch {
	case token != "":
		req.Header.Set("Authorization", "Bearer "+token)
	case key != "":
		req.SetBasicAuth(key, secret)
	}
	// No keep-alive and no proxy: one request to this machine's broker.
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := client.Do(req)
	if err != nil {
		return "", fmt.Errorf("not ready: %w", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	text := strings.TrimSpace(string(body))
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("not ready: %s %s: %s", target, resp.Status, text)
	}
	return "ready: " + target, nil
}

// endpoint returns the URL to ask and the credentials to send: the flags',
// or those of the configuration that tern serve would read.
func (o *healthcheckOptions) endpoint(environ []string, fs *pflag.FlagSet) (target, token, key, secret string, err error) {
	token = o.token
	if o.apiKey != "" {
		var ok bool
		if key, secret, ok = strings.Cut(o.apiKey, ":"); !ok {
			return "", "", "", "", errors.New("--api-key: want key:secret")
		}
	}
	target = o.url
	if target == "" || token == "" && key == "" {
		file := o.config
		if file == "" {
			file = envValue(environ, config.EnvConfigFile)
		}
		cfg, err := config.Load(file, environ, fs)
		if err != nil {
			if target == "" {
				return "", "", "", "", err
			}
			cfg = nil // --url given: credentials are optional
		}
		if cfg != nil && target == "" {
			if cfg.Admin.Listen == "" {
				return "", "", "", "", errors.New("admin.listen is empty: the broker has no admin API to ask (set it, or use --url)")
			}
			target = adminBaseURL(cfg.Admin.Listen)
		}
		if cfg != nil && token == "" && key == "" {
			if token = cfg.Admin.Token; token == "" && len(cfg.Admin.APIKeys) > 0 {
				key, secret = cfg.Admin.APIKeys[0].Key, cfg.Admin.APIKeys[0].Secret
			}
		}
	}
	u, err := url.Parse(target)
	if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
		return "", "", "", "", fmt.Errorf("--url %q: want http://host:port[/readyz]", target)
	}
	if u.Path == "" || strings.HasSuffix(u.Path, "/") {
		u.Path = strings.TrimSuffix(u.Path, "/") + "/readyz" // a base URL
	}
	return u.String(), token, key, secret, nil
}

// adminBaseURL returns the URL of an admin listener at listen, asked on
// loopback when it is a wildcard address.
func adminBaseURL(listen string) string {
	host, port, _ := net.SplitHostPort(listen)
	switch host {
	case "", "0.0.0.0":
		host = "127.0.0.1"
	case "::", "[::]":
		host = "::1"
	}
	return "http://" + net.JoinHostPort(host, port)
}

// envValue returns the value of name in environ ("" when absent).
func envValue(environ []string, name string) string {
	for _, kv := range environ {
		if k, v, ok := strings.Cut(kv, "="); ok && k == name {
			return v
		}
	}
	return ""
}
