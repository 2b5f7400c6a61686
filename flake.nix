{
  # Written for Nix 2.18+ with flakes and nixpkgs 25.05; not built here (no binary cache or
  # nixpkgs is reachable from our machines), only parsed: see the README's "Nix" section.
  description = "etcd-backup: streamed, verified etcd snapshots to S3-compatible storage";

  inputs = {
    nixpkgs.url = "github:NixOS/nixpkgs/nixos-25.05";
    crane.url = "github:ipetkov/crane";
    flake-utils.url = "github:numtide/flake-utils";
  };

  outputs = { self, nixpkgs, crane, flake-utils }:
    flake-utils.lib.eachSystem [ "x86_64-linux" "aarch64-linux" ] (system:
      let
        pkgs = nixpkgs.legacyPackages.${system};
        # crane over pkgsStatic: its Rust targets musl and links statically, which is what the
        # distroless-style image needs (no libc in the image). rustPlatform.buildRustPackage
        # would work too, but crane caches the dependency build as its own derivation, which
        # the checks below reuse.
        craneLib = crane.mkLib pkgs.pkgsStatic;
        version = (builtins.fromTOML (builtins.readFile ./Cargo.toml)).package.version;
        src = pkgs.lib.cleanSourceWith {
          src = ./.;
          # Cargo sources plus the golden snapshots the tests read.
          filter = path: type: (craneLib.filterCargoSources path type) || (pkgs.lib.hasInfix "/tests/data/" path);
        };
        commonArgs = {
          inherit src version;
          pname = "etcd-backup";
          strictDeps = true;
          # protoc and the well-known protos, for etcd-client's build script.
          nativeBuildInputs = [ pkgs.protobuf ];
          PROTOC = "${pkgs.protobuf}/bin/protoc";
          CARGO_BUILD_RUSTFLAGS = "-C target-feature=+crt-static";
        };
        cargoArtifacts = craneLib.buildDepsOnly commonArgs;
        etcd-backup = craneLib.buildPackage (commonArgs // {
          inherit cargoArtifacts;
          cargoExtraArgs = "--locked --bin etcd-backup";
          # The tests need Docker (containers) and run as `checks.tests` without them.
          doCheck = false;
        });
        # YYYYMMDDHHMMSS -> YYYY-MM-DDTHH:MM:SSZ, so the image is reproducible.
        d = self.lastModifiedDate or "19700101000000";
        created = "${builtins.substring 0 4 d}-${builtins.substring 4 2 d}-${builtins.substring 6 2 d}T${builtins.substring 8 2 d}:${builtins.substring 10 2 d}:${builtins.substring 12 2 d}Z";
        image = pkgs.dockerTools.buildLayeredImage {
          name = "etcd-backup";
          tag = version;
          inherit created;
          contents = [ pkgs.cacert pkgs.tzdata ];
          extraCommands = "mkdir -m 1777 tmp";
          config = {
            Entrypoint = [ "${etcd-backup}/bin/etcd-backup" ];
            Cmd = [ "backup" ];
            User = "65532:65532";
            Env = [ "SSL_CERT_FILE=${pkgs.cacert}/etc/ssl/certs/ca-bundle.crt" ];
            Labels = {
              "org.opencontainers.image.source" = "https://github.com/etcd-backup/etcd-backup";
              "org.opencontainers.image.version" = version;
              "org.opencontainers.image.revision" = self.rev or "dirty";
              "org.opencontainers.image.licenses" = "Apache-2.0";
            };
          };
        };
      in
      {
        packages = {
          default = etcd-backup;
          inherit etcd-backup image;
        };
        apps.default = flake-utils.lib.mkApp { drv = etcd-backup; };
        checks = {
          inherit etcd-backup;
          clippy = craneLib.cargoClippy (commonArgs // {
            inherit cargoArtifacts;
            cargoClippyExtraArgs = "--all-targets -- -D warnings";
          });
          fmt = craneLib.cargoFmt { inherit src; };
          # Unit tests only: the integration binary needs Docker.
          tests = craneLib.cargoTest (commonArgs // {
            inherit cargoArtifacts;
            cargoTestExtraArgs = "--lib";
          });
        };
        devShells.default = craneLib.devShell {
          checks = self.checks.${system};
          packages = [ pkgs.protobuf pkgs.kubectl pkgs.kustomize ];
        };
      });
}
