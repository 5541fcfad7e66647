// crd-check validates Prometheus Operator resources (ServiceMonitor, PrometheusRule)
// that kubernetes-validate has no schema for: each YAML document read from the files
// given is decoded strictly into the operator's own Go types, so an unknown field, a
// misspelt one or a wrong type is an error, as the API server's strict field validation
// would report it. Other kinds are refused: this tool only checks what it knows.
//
//	crd-check rendered-servicemonitor.yaml ...
package main

import (
	"bytes"
	"fmt"
	"os"
	"regexp"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	"sigs.k8s.io/yaml"
)

var separator = regexp.MustCompile(`(?m)^---\s*$`)

type typeMeta struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
}

func check(doc []byte) (string, error) {
	var meta typeMeta
	if err := yaml.Unmarshal(doc, &meta); err != nil {
		return "", err
	}
	if meta.APIVersion != "monitoring.coreos.com/v1" {
		return meta.Kind, fmt.Errorf("apiVersion %q is not monitoring.coreos.com/v1", meta.APIVersion)
	}
	switch meta.Kind {
	case "ServiceMonitor":
		var obj monitoringv1.ServiceMonitor
		return meta.Kind, yaml.UnmarshalStrict(doc, &obj)
	case "PrometheusRule":
		var obj monitoringv1.PrometheusRule
		if err := yaml.UnmarshalStrict(doc, &obj); err != nil {
			return meta.Kind, err
		}
		if len(obj.Spec.Groups) == 0 {
			return meta.Kind, fmt.Errorf("no rule groups")
		}
		return meta.Kind, nil
	default:
		return meta.Kind, fmt.Errorf("kind %q is not checked by crd-check", meta.Kind)
	}
}

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: crd-check FILE ...")
		os.Exit(2)
	}
	failed := false
	for _, path := range os.Args[1:] {
		data, err := os.ReadFile(path)
		if err != nil {
			fmt.Fprintln(os.Stderr, "crd-check:", err)
			os.Exit(2)
		}
		for i, doc := range separator.Split(string(data), -1) {
			if len(bytes.TrimSpace([]byte(doc))) == 0 {
				continue
			}
			kind, err := check([]byte(doc))
			if err != nil {
				fmt.Printf("INVALID %s document %d (%s): %v\n", path, i, kind, err)
				failed = true
			} else {
				fmt.Printf("OK %s document %d (%s)\n", path, i, kind)
			}
		}
	}
	if failed {
		os.Exit(1)
	}
}
