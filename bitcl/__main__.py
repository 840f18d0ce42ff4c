from bitcl.cli import entry

entry()
