package bench

import (
	"bufio"
	"os"
	"strconv"
	"strings"
)

// readRSS returns the resident set size (VmRSS) of process pid in KiB, from
// /proc/<pid>/status, or -1 when it cannot be read (not Linux, no such
// process).
func readRSS(pid int) int64 {
	f, err := os.Open("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return -1
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kib, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			if err != nil {
				return -1
			}
			return kib
		}
	}
	return -1
}
