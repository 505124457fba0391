package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"text/tabwriter"

	"github.com/spf13/cobra"
)

// output is the -o/--output flag of list and get commands: "table" (the
// default) prints for people, "json" prints what the command's REST route
// answers (Quetz field names and nulls), so scripts get one shape whichever
// way they ask. It is a pflag.Value: a bad value is a usage error when
// parsed, from the command line or from CONDAMESH_OUTPUT alike.
//
// A command declares `var out output` before building itself, calls
// out.addFlag(cmd) after, and begins its RunE with
//
//	if out.isJSON() {
//		return c.printREST(cmd, "/api/...")
//	}
//
// then reads over Connect (or REST) and prints with writeTable.
type output string

const (
	outputTable output = "table"
	outputJSON  output = "json"
)

func (o *output) String() string { return string(*o) }
func (o *output) Type() string   { return "format" }

func (o *output) Set(v string) error {
	switch output(v) {
	case outputTable, outputJSON:
		*o = output(v)
		return nil
	}
	return fmt.Errorf("%q: want table or json", v)
}

// addFlag gives cmd the -o/--output flag, its value landing in o.
func (o *output) addFlag(cmd *cobra.Command) {
	*o = outputTable
	cmd.Flags().VarP(o, "output", "o", "output format: table, or json (what the REST API answers)")
}

func (o output) isJSON() bool { return o == outputJSON }

// printREST prints, indented, the JSON that GET path (below --server)
// answers. Commands that read over Connect print their -o json this way,
// so the objects are the REST API's by construction rather than by a second
// copy of its mapping.
func (c *conn) printREST(cmd *cobra.Command, path string) error {
	base, err := c.base()
	if err != nil {
		return err
	}
	var raw json.RawMessage
	if err := callJSON(cmd.Context(), c.http(), http.MethodGet, base+path, nil, &raw); err != nil {
		return err
	}
	return printJSON(cmd.OutOrStdout(), raw)
}

// writeTable is the table form: rows written by rows with tab-separated
// cells, aligned.
func writeTable(w io.Writer, rows func(tw *tabwriter.Writer)) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	rows(tw)
	return tw.Flush()
}
