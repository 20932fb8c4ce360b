module github.com/hearth-matrix/hearth/tests/slidingsync

go 1.26.8
