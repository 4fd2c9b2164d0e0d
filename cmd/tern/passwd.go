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
	create, batch, delete bool
}

func passwdCmd() *cobra.Command {
	var o passwdOptions
	cmd := &cobra.Command{
		Use:   "passwd [-c] [-b] [-D] file username [password]",
		Short: "Manage a password file (as mosquitto_passwd does)",
		Long: `Add, update or delete a user in a password file, in Mosquitto's format
("username:$7$101$salt$hash", PBKDF2-SHA512), which tern serve
--password-file and Mosquitto both read.

Without -b the password is asked for twice, without echo, when standard
input is a terminal; otherwise it is read from the first line of standard
input (and compared with the second line, if there is one).

The file is replaced atomically and has mode 0600.`,
		Example: `  tern passwd -c passwords alice        # create the file, ask for alice's password
  tern passwd -b passwords bob s3cret    # add or update bob
  tern passwd -D passwords bob           # delete bob`,
		Args: cobra.RangeArgs(2, 3),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runPasswd(cmd.InOrStdin(), cmd.ErrOrStderr(), o, args)
		},
	}
	fl := cmd.Flags()
	fl.BoolVarP(&o.create, "create", "c", false, "create the file, replacing any existing one")
	fl.BoolVarP(&o.batch, "batch", "b", false, "take the password from the command line")
	fl.BoolVarP(&o.delete, "delete", "D", false, "delete the user")
	return cmd
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
		hash, err := auth.HashPassword(password)
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
