from exporter.cli import main

# Guarded: worker processes (serve --workers N) are spawned and import the parent's main module.
if __name__ == "__main__":
    main()
