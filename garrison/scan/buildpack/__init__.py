"""Cloud Foundry staging buildpack (API v3) that scans the staged app and gates staging on the verdict."""
