package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"
	"github.com/ternmq/tern/hooks/auth"
	"golang.org/x/term"
)

// passwdOptions are the flags of tern passwd.
type passwdOptions struct {
	create, batch, delete, update bool
	hash                          string // -H
	iterations                    int    // -I
}

func passwdCmd() *cobra.Command {
	var o passwdOptions
	cmd := &cobra.Command{
		Use:   "passwd [-c] [-b] [-D] [-H hash] [-I iterations] file username [password] | passwd -U file",
		Short: "Manage a password file (as mosquitto_passwd does)",
		Long: `Add, update or delete a user in a password file, in Mosquitto's format,
which tern serve --password-file and Mosquitto both read.

-H chooses the hash: sha512-pbkdf2 (the default: "$7$", read by Mosquitto
2.0 and later), argon2id ("$argon2id$", read by Mosquitto 2.1 and later)
or sha512 (salted SHA-512 "$6$", for Mosquitto 1.6 and older only: weak).
The costs are OWASP's current advice: PBKDF2-SHA512 with 210,000
iterations, argon2id with 19 MiB, 2 passes and 1 thread; -I sets the
iterations (PBKDF2) or passes (argon2id). A login costs one hash
(about 0.2 s of CPU for PBKDF2 at 210,000 iterations, 0.06 s for
argon2id); tern serve then remembers the password verified, so that
reconnecting costs microseconds.

Without -b the password is asked for twice, without echo, when standard
input is a terminal; otherwise it is read from the first line of standard
input (and compared with the second line, if there is one).

-U hashes, in place, a file whose lines are "username:password" in plain
text; lines that already hold a hash are left alone.

The file is replaced atomically and has mode 0600: the user tern serve
runs as must be able to read it (in the container image, uid 65532).`,
		Example: `  tern passwd -c passwords alice        # create the file, ask for alice's password
  tern passwd -b passwords bob s3cret    # add or update bob
  tern passwd -H argon2id -b passwords carol s3cret
  tern passwd -D passwords bob           # delete bob
  tern passwd -U plain-passwords         # hash a file of user:password lines`,
		Args: func(cmd *cobra.Command, args []string) error {
			if o.update {
				return cobra.ExactArgs(1)(cmd, args)
			}
			return cobra.RangeArgs(2, 3)(cmd, args)
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			if o.update {
				return runPasswdUpdate(cmd.ErrOrStderr(), o, args[0])
			}
			return runPasswd(cmd.InOrStdin(), cmd.ErrOrStderr(), o, args)
		},
	}
	fl := cmd.Flags()
	fl.BoolVarP(&o.create, "create", "c", false, "create the file, replacing any existing one")
	fl.BoolVarP(&o.batch, "batch", "b", false, "take the password from the command line")
	fl.BoolVarP(&o.delete, "delete", "D", false, "delete the user")
	fl.BoolVarP(&o.update, "update", "U", false, "hash the plain-text passwords of a file of username:password lines, in place")
	fl.StringVarP(&o.hash, "hash", "H", auth.PBKDF2SHA512, "hash: sha512-pbkdf2, argon2id or sha512")
	fl.IntVarP(&o.iterations, "iterations", "I", 0, "PBKDF2 iterations or argon2id passes (default 210000, or 2)")
	return cmd
}

// hashOptions returns the hash -H and -I ask for.
func (o passwdOptions) hashOptions() (auth.HashOptions, error) {
	switch o.hash {
	case auth.PBKDF2SHA512, auth.Argon2id, auth.SaltedSHA512:
	default:
		return auth.HashOptions{}, fmt.Errorf("-H %q: want sha512-pbkdf2, argon2id or sha512", o.hash)
	}
	if o.iterations < 0 {
		return auth.HashOptions{}, errors.New("-I must be positive")
	}
	return auth.HashOptions{Algorithm: o.hash, Iterations: o.iterations}, nil
}

// runPasswdUpdate is -U: it hashes the plain-text passwords of a file.
func runPasswdUpdate(msg io.Writer, o passwdOptions, file string) error {
	ho, err := o.hashOptions()
	if err != nil {
		return err
	}
	if o.create || o.batch || o.delete {
		return errors.New("-U takes no other option than -H and -I")
	}
	data, err := os.ReadFile(file)
	if err != nil {
		return err
	}
	var out bytes.Buffer
	hashed, kept := 0, 0
	for n, l := range strings.SplitAfter(string(data), "\n") {
		line := strings.TrimRight(l, "\r\n")
		if t := strings.TrimSpace(line); t == "" || t[0] == '#' {
			out.WriteString(l)
			continue
		}
		user, pw, ok := strings.Cut(line, ":")
		if !ok || user == "" {
			return fmt.Errorf("%s:%d: want username:password", file, n+1)
		}
		if auth.IsHash(pw) {
			kept++
			out.WriteString(line + "\n")
			continue
		}
		h, err := auth.HashPasswordWith(pw, ho)
		if err != nil {
			return err
		}
		hashed++
		out.WriteString(user + ":" + h + "\n")
	}
	if err := writeFileAtomic(file, out.Bytes(), 0o600); err != nil {
		return err
	}
	fmt.Fprintf(msg, "%s: %d passwords hashed, %d already hashed left as they were\n", file, hashed, kept)
	return nil
}

func runPasswd(in io.Reader, prompt io.Writer, o passwdOptions, args []string) error {
	file, user := args[0], args[1]
	switch {
	case o.create && o.delete:
		return errors.New("-c and -D cannot be used together")
	case o.delete && (o.batch || len(args) == 3):
		return errors.New("-D takes no password")
	case o.batch && len(args) != 3:
		return errors.New("-b needs the password on the command line")
	case !o.batch && len(args) == 3:
		return errors.New("a password on the command line needs -b")
	}
	ho, err := o.hashOptions()
	if err != nil {
		return err
	}
	if err := checkUsername(user); err != nil {
		return err
	}

	var old []byte
	if !o.create {
		var err error
		if old, err = os.ReadFile(file); err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return fmt.Errorf("%s does not exist (use -c to create it)", file)
			}
			return err
		}
	}
	var line string
	if !o.delete {
		password := ""
		if o.batch {
			password = args[2]
		} else {
			var err error
			if password, err = readPassword(in, prompt); err != nil {
				return err
			}
		}
		if password == "" {
			return errors.New("empty password")
		}
		hash, err := auth.HashPasswordWith(password, ho)
		if err != nil {
			return err
		}
		line = user + ":" + hash
	}
	updated, found := setUserLine(old, user, line)
	if o.delete && !found {
		return fmt.Errorf("user %q is not in %s", user, file)
	}
	return writeFileAtomic(file, updated, 0o600)
}

// checkUsername refuses names the file format cannot hold.
func checkUsername(user string) error {
	switch {
	case user == "":
		return errors.New("empty user name")
	case strings.ContainsAny(user, ":\r\n"):
		return errors.New("a user name cannot contain ':' or a line break")
	case len(user) > 65535:
		return errors.New("user name too long")
	}
	return nil
}

// setUserLine replaces the user's line in a password file with line, or
// deletes it when line is empty, or appends line when the user is not
// there. Other lines are kept as they are.
func setUserLine(file []byte, user, line string) ([]byte, bool) {
	var out bytes.Buffer
	found := false
	for _, l := range strings.SplitAfter(string(file), "\n") {
		if l == "" {
			continue
		}
		name, _, ok := strings.Cut(strings.TrimRight(l, "\r\n"), ":")
		if ok && name == user {
			if !found && line != "" {
				out.WriteString(line + "\n")
			}
			found = true
			continue
		}
		out.WriteString(l)
		if !strings.HasSuffix(l, "\n") {
			out.WriteByte('\n')
		}
	}
	if !found && line != "" {
		out.WriteString(line + "\n")
	}
	return out.Bytes(), found
}

// readPassword asks for the password twice without echo on a terminal, or
// reads it from the input otherwise.
func readPassword(in io.Reader, prompt io.Writer) (string, error) {
	if f, ok := in.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		ask := func(p string) (string, error) {
			fmt.Fprint(prompt, p)
			b, err := term.ReadPassword(int(f.Fd()))
			fmt.Fprintln(prompt)
			return string(b), err
		}
		pw, err := ask("Password: ")
		if err != nil {
			return "", err
		}
		again, err := ask("Reenter password: ")
		if err != nil {
			return "", err
		}
		if pw != again {
			return "", errors.New("passwords do not match")
		}
		return pw, nil
	}
	sc := bufio.NewScanner(in)
	if !sc.Scan() {
		if err := sc.Err(); err != nil {
			return "", err
		}
		return "", errors.New("no password on standard input")
	}
	pw := strings.TrimRight(sc.Text(), "\r")
	if sc.Scan() {
		if again := strings.TrimRight(sc.Text(), "\r"); again != pw {
			return "", errors.New("passwords do not match")
		}
	}
	return pw, nil
}

// writeFileAtomic replaces path with data: a temporary file in the same
// directory, synced, then renamed over it.
func writeFileAtomic(path string, data []byte, mode fs.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) // fails harmlessly after the rename
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return err
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}
