package caddyatlas

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	"github.com/spf13/cobra"
)

func init() {
	caddycmd.RegisterCommand(caddycmd.Command{
		Name:  "atlas",
		Usage: "callbacks list|retry|purge | batches list|show [--address <interface>]",
		Short: "Lists, retries and purges the spooled Atlas callbacks of a running Caddy, and shows its batches",
		Long: `
Acts on the callbacks spooled by the atlas callback route in durable mode,
through the admin API of a running Caddy (the admin.api.atlas module).

  caddy atlas callbacks list  [--state pending|dead|delivered] [--limit N] [--json]
  caddy atlas callbacks retry <id> | --state dead|pending
  caddy atlas callbacks purge <id>
  caddy atlas batches list [--state processing|complete|expired|overdue] [--limit N] [--json]
  caddy atlas batches show <batch_id> [--json]

The admin endpoint is --address, else the one of --config (with
--adapter), else localhost:2019. With several spools, --spool <dir> selects
one.
`,
		CobraFunc: func(cmd *cobra.Command) {
			callbacks := &cobra.Command{
				Use:   "callbacks",
				Short: "Lists, retries and purges spooled callbacks",
			}
			pf := callbacks.PersistentFlags()
			pf.StringP("address", "", "", "The address of the admin endpoint")
			pf.StringP("config", "c", "", "Configuration file, to find the admin endpoint")
			pf.StringP("adapter", "a", "", "Name of the config adapter of --config")
			pf.StringP("spool", "", "", "The spool directory, if several are open")

			list := &cobra.Command{
				Use:   "list [--state pending|dead|delivered] [--limit N] [--json]",
				Short: "Lists spooled callbacks, oldest first (no bodies)",
				Args:  cobra.NoArgs,
				RunE:  cmdAtlasList,
			}
			list.Flags().StringP("state", "s", "", "Only callbacks in this state: pending, dead or delivered")
			list.Flags().IntP("limit", "n", 100, "At most this many callbacks")
			list.Flags().BoolP("json", "", false, "Print the admin API's JSON answer")

			retry := &cobra.Command{
				Use:   "retry <id> | --state dead|pending",
				Short: "Makes callbacks due now, their attempts reset",
				Args:  cobra.MaximumNArgs(1),
				RunE:  cmdAtlasRetry,
			}
			retry.Flags().StringP("state", "s", "", "Retry every callback in this state: dead or pending")

			purge := &cobra.Command{
				Use:   "purge <id>",
				Short: "Deletes a spooled callback, whatever its state",
				Args:  cobra.ExactArgs(1),
				RunE:  cmdAtlasPurge,
			}
			callbacks.AddCommand(list, retry, purge)

			batches := &cobra.Command{
				Use:   "batches",
				Short: "Shows the batches of the ledger of batches",
			}
			bf := batches.PersistentFlags()
			bf.StringP("address", "", "", "The address of the admin endpoint")
			bf.StringP("config", "c", "", "Configuration file, to find the admin endpoint")
			bf.StringP("adapter", "a", "", "Name of the config adapter of --config")
			bf.BoolP("json", "", false, "Print the admin API's JSON answer")
			blist := &cobra.Command{
				Use:   "list [--state processing|complete|expired|overdue] [--limit N] [--json]",
				Short: "Lists batches, newest first",
				Args:  cobra.NoArgs,
				RunE:  cmdAtlasBatchesList,
			}
			blist.Flags().StringP("state", "s", "", "Only batches in this state: processing, complete, expired or overdue")
			blist.Flags().IntP("limit", "n", 50, "At most this many batches")
			bshow := &cobra.Command{
				Use:   "show <batch_id> [--json]",
				Short: "Shows a batch and its documents",
				Args:  cobra.ExactArgs(1),
				RunE:  cmdAtlasBatchesShow,
			}
			batches.AddCommand(blist, bshow)
			cmd.AddCommand(callbacks, batches)
		},
	})
}

// cmdAtlasList runs `caddy atlas callbacks list`.
func cmdAtlasList(cmd *cobra.Command, _ []string) error {
	body, raw, err := atlasAdminList(cmd, "/atlas/callbacks")
	if err != nil || raw {
		return err
	}
	out := cmd.OutOrStdout()
	var l struct {
		Spools []struct {
			Dir       string         `json:"dir"`
			Pending   int            `json:"pending"`
			Dead      int            `json:"dead"`
			Delivered int            `json:"delivered"`
			Keys      map[string]int `json:"keys"`
		} `json:"spools"`
		Callbacks []struct {
			Spool     string    `json:"spool"`
			ID        string    `json:"id"`
			State     string    `json:"state"`
			Size      int64     `json:"size"`
			Attempts  int       `json:"attempts"`
			LastError string    `json:"last_error"`
			Received  time.Time `json:"received"`
		} `json:"callbacks"`
		Truncated bool `json:"truncated"`
	}
	if err := json.Unmarshal(body, &l); err != nil {
		return fmt.Errorf("decoding the admin API's answer: %v", err)
	}
	if len(l.Spools) == 0 {
		// Spools are opened by callback routes in durable mode only.
		fmt.Fprintln(out, "no durable callback route is configured: this Caddy has no open spool or queue (add spool or queue jetstream, and deliver_to, to a callback block)")
		return nil
	}
	for _, s := range l.Spools {
		fmt.Fprintf(out, "spool %s: %d pending, %d dead, %d delivered", s.Dir, s.Pending, s.Dead, s.Delivered)
		// What each encryption key still protects: a key may be
		// retired once it is not listed.
		if len(s.Keys) > 0 {
			keys := make([]string, 0, len(s.Keys))
			for _, id := range slices.Sorted(maps.Keys(s.Keys)) {
				keys = append(keys, fmt.Sprintf("%s %d", id, s.Keys[id]))
			}
			fmt.Fprintf(out, "; stored by key id: %s", strings.Join(keys, ", "))
		}
		fmt.Fprintln(out)
	}
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tSTATE\tSIZE\tATTEMPTS\tRECEIVED\tLAST ERROR")
	for _, c := range l.Callbacks {
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%s\t%s\n", c.ID, c.State, c.Size, c.Attempts,
			c.Received.Format(time.RFC3339), c.LastError)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if l.Truncated {
		limit, _ := cmd.Flags().GetInt("limit")
		fmt.Fprintf(out, "(more than %d; raise --limit)\n", limit)
	}
	return nil
}

// cmdAtlasRetry runs `caddy atlas callbacks retry`.
func cmdAtlasRetry(cmd *cobra.Command, args []string) error {
	state, _ := cmd.Flags().GetString("state")
	var path string
	q := url.Values{}
	switch {
	case len(args) == 1 && state == "":
		path = "/atlas/callbacks/" + url.PathEscape(args[0]) + "/retry"
	case len(args) == 0 && state != "":
		path = "/atlas/callbacks/retry"
		q.Set("state", state)
	default:
		return errors.New("give either a callback id or --state dead|pending")
	}
	body, err := atlasAdminRequest(cmd, http.MethodPost, path, q)
	if err != nil {
		return err
	}
	var res struct {
		Retried int `json:"retried"`
	}
	_ = json.Unmarshal(body, &res)
	fmt.Fprintf(cmd.OutOrStdout(), "%d callback(s) due for delivery now\n", res.Retried)
	return nil
}

// cmdAtlasPurge runs `caddy atlas callbacks purge`.
func cmdAtlasPurge(cmd *cobra.Command, args []string) error {
	if _, err := atlasAdminRequest(cmd, http.MethodDelete, "/atlas/callbacks/"+url.PathEscape(args[0]), nil); err != nil {
		return err
	}
	fmt.Fprintf(cmd.OutOrStdout(), "callback %s deleted\n", args[0])
	return nil
}

// atlasAdminRequest sends a request to the atlas admin API and returns
// the body of the answer; an answer of 400 or more is an error holding
// the API's message.
func atlasAdminRequest(cmd *cobra.Command, method, path string, q url.Values) ([]byte, error) {
	fl := cmd.Flags()
	address, _ := fl.GetString("address")
	config, _ := fl.GetString("config")
	adapter, _ := fl.GetString("adapter")
	if dir, _ := fl.GetString("spool"); dir != "" {
		if q == nil {
			q = url.Values{}
		}
		q.Set("spool", dir)
	}
	addr, err := caddycmd.DetermineAdminAPIAddress(address, nil, config, adapter)
	if err != nil {
		return nil, fmt.Errorf("finding the admin endpoint: %v", err)
	}
	if len(q) > 0 {
		path += "?" + q.Encode()
	}
	resp, err := caddycmd.AdminAPIRequest(addr, method, path, nil, nil)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return nil, err
	}
	return body, nil
}

// atlasAdminList asks the admin API for the list at path, with the
// command's --state and --limit; with --json it prints the answer as it
// came and reports raw.
func atlasAdminList(cmd *cobra.Command, path string) (body []byte, raw bool, err error) {
	fl := cmd.Flags()
	state, _ := fl.GetString("state")
	limit, _ := fl.GetInt("limit")
	raw, _ = fl.GetBool("json")
	q := url.Values{}
	if state != "" {
		q.Set("state", state)
	}
	q.Set("limit", fmt.Sprint(limit))
	body, err = atlasAdminRequest(cmd, http.MethodGet, path, q)
	if err != nil || !raw {
		return body, false, err
	}
	_, err = cmd.OutOrStdout().Write(body)
	return body, true, err
}

// cmdAtlasBatchesList runs `caddy atlas batches list`.
func cmdAtlasBatchesList(cmd *cobra.Command, _ []string) error {
	body, raw, err := atlasAdminList(cmd, "/atlas/batches")
	if err != nil || raw {
		return err
	}
	out := cmd.OutOrStdout()
	var l batchList
	if err := json.Unmarshal(body, &l); err != nil {
		return fmt.Errorf("decoding the admin API's answer: %v", err)
	}
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "BATCH\tSTATE\tUPLOADED\tPENDING\tRECEIVED\tFAILED")
	for _, b := range l.Batches {
		st := b.State
		if b.Overdue {
			st += " (overdue)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%d\n", b.BatchID, st, b.UploadedAt.UTC().Format(time.RFC3339),
			b.Counts.Pending, b.Counts.Received, b.Counts.Failed)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if l.Next != "" {
		fmt.Fprintln(out, "more: --json shows the cursor of the next page")
	}
	return nil
}

// cmdAtlasBatchesShow runs `caddy atlas batches show`.
func cmdAtlasBatchesShow(cmd *cobra.Command, args []string) error {
	raw, _ := cmd.Flags().GetBool("json")
	body, err := atlasAdminRequest(cmd, http.MethodGet, "/atlas/batches/"+url.PathEscape(args[0]), nil)
	if err != nil {
		return err
	}
	out := cmd.OutOrStdout()
	if raw {
		_, err := out.Write(body)
		return err
	}
	var b batchAnswer
	if err := json.Unmarshal(body, &b); err != nil {
		return fmt.Errorf("decoding the admin API's answer: %v", err)
	}
	st := b.State
	if b.Overdue {
		st += " (overdue)"
	}
	fmt.Fprintf(out, "batch %s: %s; %d pending, %d received, %d failed; uploaded %s\n", b.BatchID, st,
		b.Counts.Pending, b.Counts.Received, b.Counts.Failed, b.UploadedAt.UTC().Format(time.RFC3339))
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "DOCUMENT\tSTATE\tSOURCE\tRECEIVED\tERROR CODE")
	for _, d := range b.Documents {
		at := ""
		if d.ReceivedAt != nil {
			at = d.ReceivedAt.UTC().Format(time.RFC3339)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", d.DocumentID, d.State, d.Source, at, d.ErrorCode)
	}
	return tw.Flush()
}
