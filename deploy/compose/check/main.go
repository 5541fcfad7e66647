// compose-check loads Compose files with the Compose specification's reference loader
// (compose-go, the library `docker compose` itself uses): schema validation,
// interpolation, path resolution and consistency checks (unknown networks, volumes,
// dependency cycles). It prints the resolved project as JSON, for tests to inspect.
//
//	compose-check [--env-file F] compose.yaml [more.yaml ...]
package main

import (
	"context"
	"flag"
	"fmt"
	"os"

	"github.com/compose-spec/compose-go/v2/cli"
)

func main() {
	envFile := flag.String("env-file", "", "optional .env file for interpolation")
	name := flag.String("project-name", "", "project name (default: the file's name: key)")
	flag.Parse()
	if flag.NArg() == 0 {
		fmt.Fprintln(os.Stderr, "usage: compose-check [--env-file F] compose.yaml ...")
		os.Exit(2)
	}
	options := []cli.ProjectOptionsFn{cli.WithOsEnv}
	if *name != "" {
		options = append(options, cli.WithName(*name))
	}
	if *envFile != "" {
		options = append(options, cli.WithEnvFiles(*envFile), cli.WithDotEnv)
	}
	opts, err := cli.NewProjectOptions(flag.Args(), options...)
	if err != nil {
		fmt.Fprintln(os.Stderr, "compose-check:", err)
		os.Exit(1)
	}
	project, err := opts.LoadProject(context.Background())
	if err != nil {
		fmt.Fprintln(os.Stderr, "compose-check:", err)
		os.Exit(1)
	}
	out, err := project.MarshalJSON()
	if err != nil {
		fmt.Fprintln(os.Stderr, "compose-check:", err)
		os.Exit(1)
	}
	os.Stdout.Write(out)
	fmt.Println()
}
