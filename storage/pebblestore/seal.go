package pebblestore

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/ternmq/tern/storage"
)

// Pebble checks its tables (sizes at open, block checksums on read) and
// the synced part of its log, but it reads a MANIFEST or a log that ends
// early or holds a damaged record as if a crash had cut it short: it
// recovers an older state, drops the rest and goes on. That is right after
// a crash and wrong after a clean shutdown, when nothing was being written.
//
// So a clean Close seals the directory: it writes the name, size and
// CRC-32C of every file (the size alone for tables, which check
// themselves) to sealName. Open checks the files against the seal before
// Pebble sees them, refuses a directory that does not match, and removes
// the seal once it matches, before Pebble writes anything. After a crash
// there is no seal, and Pebble's own recovery rules.

// sealName is the file a clean Close leaves in the directory.
const sealName = "TERN-SEAL"

const sealHeader = "tern-seal 1"

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// sealEntry is one file as the seal records it; a table has no CRC.
type sealEntry struct {
	name   string
	size   int64
	crc    uint32
	hasCRC bool
}

func isTable(name string) bool {
	return strings.HasSuffix(name, ".sst") || strings.HasSuffix(name, ".blob")
}

// fileCRC returns a file's size and CRC-32C.
func fileCRC(path string) (int64, uint32, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, 0, err
	}
	defer f.Close()
	h := crc32.New(castagnoli)
	n, err := io.Copy(h, f)
	return n, h.Sum32(), err
}

// writeSeal records the files of a closed store.
func writeSeal(dir string) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	var buf bytes.Buffer
	buf.WriteString(sealHeader + "\n")
	for _, e := range entries {
		name := e.Name()
		if !e.Type().IsRegular() || name == "LOCK" || name == sealName || strings.ContainsAny(name, " \n") {
			continue
		}
		if isTable(name) {
			fi, err := e.Info()
			if err != nil {
				return err
			}
			fmt.Fprintf(&buf, "%s %d -\n", name, fi.Size())
			continue
		}
		size, sum, err := fileCRC(filepath.Join(dir, name))
		if err != nil {
			return err
		}
		fmt.Fprintf(&buf, "%s %d %08x\n", name, size, sum)
	}
	return writeFileSynced(dir, sealName, buf.Bytes())
}

// writeFileSynced writes a file through a temporary name and a rename, and
// syncs the file and the directory.
func writeFileSynced(dir, name string, data []byte) error {
	tmp := filepath.Join(dir, name+".tmp")
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	err = errors.Join(err, f.Sync(), f.Close())
	if err == nil {
		err = os.Rename(tmp, filepath.Join(dir, name))
	}
	if err != nil {
		os.Remove(tmp)
		return err
	}
	return syncDir(dir)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	return errors.Join(d.Sync(), d.Close())
}

// checkSeal checks the directory against its seal, if it has one, and
// removes the seal when the files match. It changes nothing otherwise.
func checkSeal(dir string) error {
	data, err := os.ReadFile(filepath.Join(dir, sealName))
	if errors.Is(err, os.ErrNotExist) {
		return nil // not closed cleanly, or never opened by this version
	}
	if err != nil {
		return err
	}
	entries, err := parseSeal(data)
	if err != nil {
		return fmt.Errorf("%w: %s: %v", storage.ErrCorrupt, filepath.Join(dir, sealName), err)
	}
	for _, e := range entries {
		path := filepath.Join(dir, e.name)
		var size int64
		var sum uint32
		if e.hasCRC {
			size, sum, err = fileCRC(path)
		} else {
			var fi os.FileInfo
			if fi, err = os.Stat(path); err == nil {
				size = fi.Size()
			}
		}
		switch {
		case errors.Is(err, os.ErrNotExist):
			return fmt.Errorf("%w: %s is missing (the store was closed cleanly with it)", storage.ErrCorrupt, path)
		case err != nil:
			return err
		case size != e.size:
			return fmt.Errorf("%w: %s is %d bytes, was %d at the last clean close", storage.ErrCorrupt, path, size, e.size)
		case e.hasCRC && sum != e.crc:
			return fmt.Errorf("%w: %s has changed since the last clean close (CRC-32C %08x, was %08x)",
				storage.ErrCorrupt, path, sum, e.crc)
		}
	}
	if err := os.Remove(filepath.Join(dir, sealName)); err != nil {
		return err
	}
	return syncDir(dir)
}

func parseSeal(data []byte) ([]sealEntry, error) {
	sc := bufio.NewScanner(bytes.NewReader(data))
	if !sc.Scan() || sc.Text() != sealHeader {
		return nil, errors.New("unknown seal format")
	}
	var out []sealEntry
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) != 3 {
			return nil, fmt.Errorf("bad seal line %q", sc.Text())
		}
		e := sealEntry{name: f[0]}
		var err error
		if e.size, err = strconv.ParseInt(f[1], 10, 64); err != nil || e.size < 0 || strings.ContainsAny(e.name, `/\`) {
			return nil, fmt.Errorf("bad seal line %q", sc.Text())
		}
		if f[2] != "-" {
			v, err := strconv.ParseUint(f[2], 16, 32)
			if err != nil {
				return nil, fmt.Errorf("bad seal line %q", sc.Text())
			}
			e.crc, e.hasCRC = uint32(v), true
		}
		out = append(out, e)
	}
	return out, sc.Err()
}
