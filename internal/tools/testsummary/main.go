// Command testsummary reads `go test -json` on stdin and prints what a person wants to
// see: the output of failed tests, then one line per package, then the totals.
package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"sort"
	"strings"
)

type event struct {
	Action  string
	Package string
	Test    string
	Output  string
	Elapsed float64
}

func main() {
	outputs := map[string]*strings.Builder{}
	var failedTests []string
	pkgResult := map[string]string{}
	pkgElapsed := map[string]float64{}
	var pass, fail, skip int
	sc := bufio.NewScanner(os.Stdin)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for sc.Scan() {
		var e event
		if json.Unmarshal(sc.Bytes(), &e) != nil {
			continue
		}
		key := e.Package + " " + e.Test
		switch e.Action {
		case "output":
			if outputs[key] == nil {
				outputs[key] = &strings.Builder{}
			}
			outputs[key].WriteString(e.Output)
		case "pass", "fail", "skip":
			if e.Test == "" {
				pkgResult[e.Package] = e.Action
				pkgElapsed[e.Package] = e.Elapsed
				continue
			}
			switch e.Action {
			case "pass":
				pass++
			case "fail":
				fail++
				failedTests = append(failedTests, key)
			case "skip":
				skip++
			}
		}
	}
	for _, k := range failedTests {
		fmt.Printf("--- FAIL %s\n", k)
		if b := outputs[k]; b != nil {
			fmt.Print(b.String())
		}
	}
	pkgs := make([]string, 0, len(pkgResult))
	for p := range pkgResult {
		pkgs = append(pkgs, p)
	}
	sort.Strings(pkgs)
	for _, p := range pkgs {
		if pkgResult[p] == "fail" && outputs[p+" "] != nil {
			fmt.Print(outputs[p+" "].String())
		}
		fmt.Printf("%-4s %s %.1fs\n", pkgResult[p], p, pkgElapsed[p])
	}
	fmt.Printf("go test: %d passed, %d failed, %d skipped\n", pass, fail, skip)
}
