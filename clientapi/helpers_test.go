package clientapi_test

import "github.com/hearth-matrix/hearth/accounts"

func accountsNewAdmin(user, password string) accounts.NewUser {
	return accounts.NewUser{Localpart: user, Password: password, Admin: true}
}
