// Package hearth is the root of the Hearth module; it carries the sample
// configuration so that `hearth generate-config` prints exactly the file
// that documents every option.
package hearth

import _ "embed"

// SampleConfig is config.sample.yaml.
//
//go:embed config.sample.yaml
var SampleConfig string
