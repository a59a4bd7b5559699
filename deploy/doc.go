// Package deploy holds what an operator deploys beside the consumer: the
// SpiceDB schema (spicedb/schema.zed), the default rules file (rules.yaml),
// and (in subdirectories) compose and Kubernetes manifests, dashboards and
// alerts. The schema and rules are embedded so that `consumer schema apply`
// and the defaults always match what is shipped.
package deploy

import _ "embed"

// Schema is deploy/spicedb/schema.zed.
//
//go:embed spicedb/schema.zed
var Schema string

// Rules is deploy/rules.yaml, identical to the projector's embedded default.
//
//go:embed rules.yaml
var Rules []byte
