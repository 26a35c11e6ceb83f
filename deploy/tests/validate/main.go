// Command validate checks deployment files against the real schemas, beyond their structure:
//
//	validate compose FILE      the Compose Specification, as docker compose loads it (compose-go)
//	validate k8s FILE          every document decoded strictly into its Kubernetes API type
//	                           (unknown or misspelt fields and wrong types are errors)
//	validate dockerfile FILE   parsed into instructions by BuildKit's Dockerfile frontend, with its
//	                           lint warnings treated as errors
//
// Used by deploy/tests/run.sh, which builds it with `go build`.
package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/compose-spec/compose-go/v2/loader"
	"github.com/moby/buildkit/frontend/dockerfile/instructions"
	"github.com/moby/buildkit/frontend/dockerfile/linter"
	"github.com/moby/buildkit/frontend/dockerfile/parser"
	"github.com/compose-spec/compose-go/v2/types"
	yamlv3 "gopkg.in/yaml.v3"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	"sigs.k8s.io/yaml"
)

func main() {
	if len(os.Args) != 3 {
		fmt.Fprintln(os.Stderr, "usage: validate compose|k8s FILE")
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "compose":
		err = compose(os.Args[2])
	case "k8s":
		err = kubernetes(os.Args[2])
	case "dockerfile":
		err = dockerfile(os.Args[2])
	default:
		err = fmt.Errorf("unknown check %q", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

func compose(path string) error {
	abs, err := filepath.Abs(path)
	if err != nil {
		return err
	}
	content, err := os.ReadFile(abs)
	if err != nil {
		return err
	}
	project, err := loader.LoadWithContext(context.Background(), types.ConfigDetails{
		WorkingDir:  filepath.Dir(abs),
		ConfigFiles: []types.ConfigFile{{Filename: abs, Content: content}},
		Environment: types.Mapping{},
	}, func(o *loader.Options) {
		o.SetProjectName("validate", false)
		o.ResolvePaths = true
	})
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	fmt.Printf("%s: valid, %d services\n", path, len(project.Services))
	return nil
}

// kubernetes decodes each document of a multi-document YAML file strictly into its API type.
func kubernetes(path string) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	dec := yamlv3.NewDecoder(bytes.NewReader(data))
	var errs []error
	n := 0
	for {
		var doc map[string]any
		if err := dec.Decode(&doc); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
		if doc == nil {
			continue
		}
		n++
		raw, err := yamlv3.Marshal(doc)
		if err != nil {
			return err
		}
		kind := fmt.Sprint(doc["apiVersion"], " ", doc["kind"])
		var target any
		switch kind {
		case "v1 Namespace":
			target = &corev1.Namespace{}
		case "v1 ConfigMap":
			target = &corev1.ConfigMap{}
		case "v1 Secret":
			target = &corev1.Secret{}
		case "v1 Service":
			target = &corev1.Service{}
		case "apps/v1 Deployment":
			target = &appsv1.Deployment{}
		case "policy/v1 PodDisruptionBudget":
			target = &policyv1.PodDisruptionBudget{}
		case "networking.k8s.io/v1 NetworkPolicy":
			target = &networkingv1.NetworkPolicy{}
		default:
			errs = append(errs, fmt.Errorf("document %d: unexpected kind %q", n, kind))
			continue
		}
		if err := yaml.UnmarshalStrict(raw, target); err != nil {
			errs = append(errs, fmt.Errorf("document %d (%s %v): %w", n, kind, name(doc), err))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	fmt.Printf("%s: %d documents valid\n", path, n)
	return nil
}

func name(doc map[string]any) any {
	if m, ok := doc["metadata"].(map[string]any); ok {
		return m["name"]
	}
	return nil
}

// dockerfile parses a Dockerfile as BuildKit does and reports parse errors and lint warnings.
func dockerfile(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	var warnings []error
	lint := linter.New(&linter.Config{Warn: func(rule, desc, url, msg string, loc []parser.Range) {
		line := 0
		if len(loc) > 0 {
			line = loc[0].Start.Line
		}
		warnings = append(warnings, fmt.Errorf("%s:%d: %s: %s", path, line, rule, msg))
	}})
	result, err := parser.Parse(f)
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	for _, w := range result.Warnings {
		warnings = append(warnings, fmt.Errorf("%s:%d: %s", path, w.Location.Start.Line, w.Short))
	}
	stages, metaArgs, err := instructions.Parse(result.AST, lint)
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	if err := errors.Join(warnings...); err != nil {
		return err
	}
	fmt.Printf("%s: valid, %d stages, %d global ARGs\n", path, len(stages), len(metaArgs))
	return nil
}
