package backup_test

import (
	"net/http"
	"os/exec"
)

var (
	httpClient   = &http.Client{}
	execLookPath = exec.LookPath
)
