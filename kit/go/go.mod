module github.com/saga-orchestrator/saga-orchestrator/kit/go

go 1.19
