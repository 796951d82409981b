package initcmd

import (
	"context"
	"fmt"
	"io"
	"os"

	"github.com/computetools/compute-tools/internal/compute"
)

// ConfigureByHand applies the config file to the Postgres of the connection string,
// without touching the compute's state; with dryRun it prints the plan to out and changes
// nothing.
func ConfigureByHand(ctx context.Context, h Host, dryRun bool, out io.Writer) error {
	cfg, err := h.Config()
	if err != nil {
		return err
	}
	raw, err := os.ReadFile(cfg.ConfigFile)
	if err != nil {
		return fmt.Errorf("read config: %w", err)
	}
	if dryRun {
		plan, err := compute.DryRun(ctx, cfg, raw)
		if err != nil {
			return err
		}
		for _, line := range plan {
			fmt.Fprintln(out, line)
		}
		fmt.Fprintf(out, "%d actions (dry run: nothing was changed)\n", len(plan))
		return nil
	}
	res, err := compute.ApplyByHand(ctx, cfg, raw, h.Log)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "applied %d actions\n", res.Total)
	return nil
}
