"""Sample answers copied verbatim from the seed documents (seed 001 = Zoho Projects API v3), for tests.

Each constant names the seed line its "Sample Response" starts on. Generated once from the document text;
do not edit by hand: a test that answers with these answers the way the documents say Zoho does.
"""

# ruff: noqa: E501

# seed 001:779 "Get All Portals" sample response
PORTALS = [
    {
        "owner": {
            "zpuid": "6000000002407",
            "full_name": "Zoho Projects",
            "name": "Zoho Projects",
            "last_name": "",
            "id": 23163805,
            "is_client_user": False,
            "first_name": "Zoho Projects",
            "email": "zohoprojects@zoho.com",
        },
        "portal_name": "zylkerportal",
        "is_default_portal": False,
        "profile_id": 9000000002844,
        "timezone": "Europe/Dublin",
        "profile": {"name": "Portal Owner", "id": 9000000002844},
        "portal_owner": 26827978,
        "org_name": "zylkerportalzohodotcom",
        "zsoid": "26828068",
        "org_logo": "/images/svg/zps-logo-default.svg",
    }
]

# seed 001:1080 "Get All Projects: a top-level array" sample response
PROJECTS = [
    {
        "end_date": "2029-01-01",
        "project_type": "active",
        "is_public_project": "false",
        "is_rollup_project": "false",
        "name": "via_api_006_03_DEC_1157AM",
        "is_strict_project": "false",
        "id": "7000000082003",
        "key": "54",
        "start_date": "2024-09-30",
    }
]

# seed 001:3554 "Get Project Issues" sample response
ISSUE_LIST = {
    "page_info": {"per_page": 200, "page": 1, "sort_by": [{"field_names": ["created_time"], "order_by": "DESCENDING"}]},
    "issues": [
        {
            "id": "139655000000477124",
            "prefix": "EC1-I14",
            "name": "Escalation due to iterated process hold",
            "flag": "Internal",
            "created_time": "2024-05-06T11:25:58.000Z",
            "created_by": {
                "zuid": 76721203,
                "zpuid": "139655000000072009",
                "name": "kathrine Bode",
                "email": "katharina.bode@gmail.com",
                "first_name": "kathrine",
                "last_name": "Bode",
            },
            "status": {
                "id": "139655000000057085",
                "name": "InProgress",
                "color": "statuscol_yellowishorange",
                "color_hexcode": "#fbc11e",
                "is_closed_type": False,
                "is_default": False,
            },
            "assignee": {
                "zuid": 0,
                "zpuid": "139655000000057657",
                "name": "Unassigned User",
                "email": "Unassigned User",
                "first_name": "Unassigned User",
            },
            "tags": [
                {"id": "139655000000155027", "name": "issue", "color_class": "bg-tag18"},
                {"id": "139655000000189037", "name": "bug", "color_class": "bg-tag19"},
                {"id": "139655000000493179", "name": "problem", "color_class": "bg-tag17"},
                {"id": "139655000000493183", "name": "neefix", "color_class": "bg-tag7"},
            ],
            "last_updated_time": "2024-05-14T09:28:58.000Z",
            "severity": {"id": "139655000000057155", "value": "Critical"},
            "classification": {"id": "139655000000057017", "value": "Security"},
            "is_it_reproducible": {"id": "139655000000057057", "value": "Sometimes"},
            "module": {"id": "139655000000147034", "value": "Module 1"},
            "rate_per_hour": 20.0,
            "cost_per_hour": 10.0,
            "singleline_1": "Lorem Ipsum is simply dummy text of the printing and typesetting industry. Lorem Ipsum "
            "has been the industry's standard dummy text ever since the 1500",
            "checkbox1": True,
            "percentage1": 987654.0,
            "multipicklist1": ["PINK", "GREY", "RED", "SILVER", "WHITE", "BLACK"],
            "user_select": {
                "zuid": 78971742,
                "zpuid": "139655000000250217",
                "name": "miyoko.kunde",
                "email": "miyoko.kunde@gmail.com",
                "first_name": "Miyoko",
                "last_name": "Kunde",
            },
            "phone1": "+91 98452252323",
            "date_1": "2024-05-13T18:30:00.000Z",
            "currency1": {"currency_code": "USD", "formatted_amount": "$ 34,567,654.00", "amount": 34567654},
            "email1": "clintwestwood@gmail.com",
            "multiline_1": "Lorem Ipsum is simply dummy text of the printing and typesetting industry. Lorem Ipsum "
            "has been the industry's",
            "number_1": 12345,
            "url1": "https://www.projects.com",
            "date_field_1": "2024-05-01",
            "userpicklist_all": {
                "zuid": 78815938,
                "zpuid": "139655000000436259",
                "name": "jermine.dekow",
                "email": "jermine.dekow@gmail.com",
                "first_name": "Jermine",
                "last_name": "Dekow",
            },
            "picklist_1": "DESK",
            "mupl1": [
                {
                    "zuid": 83641347,
                    "zpuid": "139655000000415001",
                    "name": "John Kevin",
                    "email": "johnkevin@gmail.com",
                    "first_name": "John",
                    "last_name": "Kevin",
                },
                {
                    "zuid": 78815938,
                    "zpuid": "139655000000436259",
                    "name": "Lehnar Annabelle",
                    "email": "lehnar.annabelle@gmail.com",
                    "first_name": "Lehnar",
                    "last_name": "Annabelle",
                },
            ],
        }
    ],
}

# seed 001:3589 "Get Issue Details" sample response
ISSUE_DETAILS = {
    "id": "139655000000477124",
    "prefix": "EC1-I14",
    "name": "Escalation due to iterated process hold",
    "flag": "Internal",
    "created_time": "2024-05-06T11:25:58.000Z",
    "created_by": {
        "zuid": 76721203,
        "zpuid": "139655000000072009",
        "name": "kathrine Bode",
        "email": "katharina.bode@gmail.com",
        "first_name": "kathrine",
        "last_name": "Bode",
    },
    "status": {
        "id": "139655000000057085",
        "name": "InProgress",
        "color": "statuscol_yellowishorange",
        "color_hexcode": "#fbc11e",
        "is_closed_type": False,
        "is_default": False,
    },
    "assignee": {
        "zuid": 0,
        "zpuid": "139655000000057657",
        "name": "Unassigned User",
        "email": "Unassigned User",
        "first_name": "Unassigned User",
    },
    "tags": [
        {"id": "139655000000155027", "name": "issue", "color_class": "bg-tag18"},
        {"id": "139655000000189037", "name": "bug", "color_class": "bg-tag19"},
        {"id": "139655000000493179", "name": "problem", "color_class": "bg-tag17"},
        {"id": "139655000000493183", "name": "neefix", "color_class": "bg-tag7"},
    ],
    "last_updated_time": "2024-05-14T09:28:58.000Z",
    "severity": {"id": "139655000000057155", "value": "Critical"},
    "classification": {"id": "139655000000057017", "value": "Security"},
    "is_it_reproducible": {"id": "139655000000057057", "value": "Sometimes"},
    "module": {"id": "139655000000147034", "value": "Module 1"},
    "rate_per_hour": 20.0,
    "cost_per_hour": 10.0,
    "singleline_1": "Lorem Ipsum is simply dummy text of the printing and typesetting industry. Lorem Ipsum has been "
    "the industry's standard dummy text ever since the 1500",
    "checkbox1": True,
    "percentage1": 987654.0,
    "multipicklist1": ["PINK", "GREY", "RED", "SILVER", "WHITE", "BLACK"],
    "user_select": {
        "zuid": 78971742,
        "zpuid": "139655000000250217",
        "name": "miyoko.kunde",
        "email": "miyoko.kunde@gmail.com",
        "first_name": "Miyoko",
        "last_name": "Kunde",
    },
    "phone1": "+91 98452252323",
    "date_1": "2024-05-13T18:30:00.000Z",
    "currency1": {"currency_code": "USD", "formatted_amount": "$ 34,567,654.00", "amount": 34567654},
    "email1": "clintwestwood@gmail.com",
    "multiline_1": "Lorem Ipsum is simply dummy text of the printing and typesetting industry. Lorem Ipsum has been the "
    "industry's",
    "number_1": 12345,
    "url1": "https://www.projects.com",
    "date_field_1": "2024-05-01",
    "userpicklist_all": {
        "zuid": 78815938,
        "zpuid": "139655000000436259",
        "name": "jermine.dekow",
        "email": "jermine.dekow@gmail.com",
        "first_name": "Jermine",
        "last_name": "Dekow",
    },
    "picklist_1": "DESK",
    "mupl1": [
        {
            "zuid": 83641347,
            "zpuid": "139655000000415001",
            "name": "John Kevin",
            "email": "johnkevin@gmail.com",
            "first_name": "John",
            "last_name": "Kevin",
        },
        {
            "zuid": 78815938,
            "zpuid": "139655000000436259",
            "name": "Lehnar Annabelle",
            "email": "lehnar.annabelle@gmail.com",
            "first_name": "Lehnar",
            "last_name": "Annabelle",
        },
    ],
}

# seed 001:3777 "Create an Issue" sample response
ISSUE_CREATED = {
    "id": "2380600009754342354",
    "name": "Sample Bug Title",
    "flag": "External",
    "due_date": "2025-12-12T02:12:00.000Z",
    "associated_teams": {"id": "238060000975454323", "name": "Risk Management Team"},
    "assignee": {
        "zuid": 590675,
        "zpuid": "23806000097546091",
        "name": "John Mike",
        "email": "johnmike23@gmail.com",
        "first_name": "John",
    },
    "status": {
        "id": "2380600567533251",
        "name": "Open",
        "color": "statuscol_blue",
        "color_hexcode": "#08aeea",
        "is_closed_type": False,
        "is_default": True,
    },
    "severity": {"id": "2380600009754345423", "value": "Critical"},
    "classification": {"id": "2380600009754345234", "value": "Data Loss"},
    "is_it_reproducible": {"id": "23806000097534234", "value": "Rarely"},
    "module": {"id": "238060000975434324", "value": "Resolved Bugs Module"},
    "release_milestone": {"id": "238060000975408779", "value": "Planned Titles"},
    "affected_milestone": {"id": "238060000975208543", "value": "Modified Titles"},
    "reminder": {
        "type": "daily",
        "time": "12:00 PM",
        "reminder_custom_date": "2025-12-12T12:30:00.000Z",
        "notify_users": [
            {
                "zuid": 590675,
                "zpuid": "23806000097546091",
                "name": "John Mike",
                "email": "johnmike23@gmail.com",
                "first_name": "John",
            }
        ],
    },
    "tags": [{"id": "238060000975404352", "name": "red bug", "color_class": "bg-tag6"}],
    "rate_per_hour": "945.25",
    "cost_rate_per_hour": "510.75",
}

# seed 001:3939 "Update an Issue" sample response
ISSUE_UPDATED = {
    "id": "139655000000477124",
    "prefix": "EC1-I14",
    "name": "Escalation due to iterated process hold",
    "flag": "Internal",
    "created_time": "2024-05-06T11:25:58.000Z",
    "created_by": {
        "zuid": 76721203,
        "zpuid": "139655000000072009",
        "name": "kathrine Bode",
        "email": "katharina.bode@gmail.com",
        "first_name": "kathrine",
        "last_name": "Bode",
    },
    "status": {
        "id": "139655000000057085",
        "name": "InProgress",
        "color": "statuscol_yellowishorange",
        "color_hexcode": "#fbc11e",
        "is_closed_type": False,
        "is_default": False,
    },
    "assignee": {
        "zuid": 0,
        "zpuid": "139655000000057657",
        "name": "Unassigned User",
        "email": "Unassigned User",
        "first_name": "Unassigned User",
    },
    "tags": [
        {"id": "139655000000155027", "name": "issue", "color_class": "bg-tag18"},
        {"id": "139655000000189037", "name": "bug", "color_class": "bg-tag19"},
        {"id": "139655000000493179", "name": "problem", "color_class": "bg-tag17"},
        {"id": "139655000000493183", "name": "neefix", "color_class": "bg-tag7"},
    ],
    "last_updated_time": "2024-05-14T09:28:58.000Z",
    "severity": {"id": "139655000000057155", "value": "Critical"},
    "classification": {"id": "139655000000057017", "value": "Security"},
    "is_it_reproducible": {"id": "139655000000057057", "value": "Sometimes"},
    "module": {"id": "139655000000147034", "value": "Module 1"},
    "rate_per_hour": 20.0,
    "cost_per_hour": 10.0,
    "singleline_1": "Lorem Ipsum is simply dummy text of the printing and typesetting industry. Lorem Ipsum has been "
    "the industry's standard dummy text ever since the 1500",
    "checkbox1": True,
    "percentage1": 987654.0,
    "multipicklist1": ["PINK", "GREY", "RED", "SILVER", "WHITE", "BLACK"],
    "user_select": {
        "zuid": 78971742,
        "zpuid": "139655000000250217",
        "name": "miyoko.kunde",
        "email": "miyoko.kunde@gmail.com",
        "first_name": "Miyoko",
        "last_name": "Kunde",
    },
    "phone1": "+91 98452252323",
    "date_1": "2024-05-13T18:30:00.000Z",
    "currency1": {"currency_code": "USD", "formatted_amount": "$ 34,567,654.00", "amount": 34567654},
    "email1": "clintwestwood@gmail.com",
    "multiline_1": "Lorem Ipsum is simply dummy text of the printing and typesetting industry. Lorem Ipsum has been the "
    "industry's",
    "number_1": 12345,
    "url1": "https://www.projects.com",
    "date_field_1": "2024-05-01",
    "userpicklist_all": {
        "zuid": 78815938,
        "zpuid": "139655000000436259",
        "name": "jermine.dekow",
        "email": "jermine.dekow@gmail.com",
        "first_name": "Jermine",
        "last_name": "Dekow",
    },
    "picklist_1": "DESK",
    "mupl1": [
        {
            "zuid": 83641347,
            "zpuid": "139655000000415001",
            "name": "John Kevin",
            "email": "johnkevin@gmail.com",
            "first_name": "John",
            "last_name": "Kevin",
        },
        {
            "zuid": 78815938,
            "zpuid": "139655000000436259",
            "name": "Lehnar Annabelle",
            "email": "lehnar.annabelle@gmail.com",
            "first_name": "Lehnar",
            "last_name": "Annabelle",
        },
    ],
}

# seed 001:4006 "Get Issue Description" sample response
ISSUE_DESCRIPTION = {
    "description": "A critical bug has been identified that halts the production build process. This issue needs "
    "immediate attention as it affects the deployment of the latest version of our application"
}

# seed 001:5347 "Get Comments" sample response
COMMENTS = {
    "comments": [
        {
            "created_time": "2024-05-28T05:22:05.210Z",
            "can_edit_comment": True,
            "last_modified_time": "2024-05-28T05:22:05.210Z",
            "can_delete_comment": True,
            "added_by": {
                "zpuid": "139655000000057003",
                "full_name": "Jennie Deva",
                "name": "Jennie",
                "last_name": "Deva",
                "id": 73746290,
                "is_client_user": False,
                "first_name": "Jennie",
                "email": "jenniedev@yahoo.com",
            },
            "added_via": "Projects",
            "comment": "\n"
            "Great work on resolving this issue quickly. The missing dependency was a critical "
            "oversight, but the prompt investigation and fix have ensured that our deployment schedule "
            "remains on track.\n",
            "id": "139655000000505161",
            "last_modified_by": {
                "zpuid": "139655000000057003",
                "full_name": "Jennie Deva",
                "name": "Jennie",
                "last_name": "Deva",
                "id": 73746290,
                "is_client_user": False,
                "first_name": "Jennie",
                "email": "jenniedev@yahoo.com",
            },
        }
    ],
    "page_info": {
        "per_page": 100,
        "has_next_page": False,
        "count": 2,
        "page": 1,
        "sort_by": [{"field_names": ["created_time"], "order_by": "ASCENDING"}],
    },
}

# seed 001:5511 "Add Comment" sample response
COMMENT_ADDED = {
    "comments": [
        {
            "created_time": "2024-05-28T05:22:05.210Z",
            "can_edit_comment": True,
            "last_modified_time": "2024-05-28T05:22:05.210Z",
            "can_delete_comment": True,
            "added_by": {
                "zpuid": "139655000000057003",
                "full_name": "Jennie Deva",
                "name": "Jennie",
                "last_name": "Deva",
                "id": 73746290,
                "is_client_user": False,
                "first_name": "Jennie",
                "email": "jenniedev@yahoo.com",
            },
            "added_via": "Projects",
            "comment": "\n"
            "Great work on resolving this issue quickly. The missing dependency was a critical "
            "oversight, but the prompt investigation and fix have ensured that our deployment schedule "
            "remains on track.\n",
            "id": "139655000000505161",
            "last_modified_by": {
                "zpuid": "139655000000057003",
                "full_name": "Jennie Deva",
                "name": "Jennie",
                "last_name": "Deva",
                "id": 73746290,
                "is_client_user": False,
                "first_name": "Jennie",
                "email": "jenniedev@yahoo.com",
            },
        }
    ],
    "page_info": {
        "per_page": 100,
        "has_next_page": False,
        "count": 2,
        "page": 1,
        "sort_by": [{"field_names": ["created_time"], "order_by": "ASCENDING"}],
    },
}

# seed 001:5587 "Update Comment" sample response
COMMENT_UPDATED = {
    "comments": [
        {
            "created_time": "2024-05-28T05:22:05.210Z",
            "can_edit_comment": True,
            "last_modified_time": "2024-05-28T05:22:05.210Z",
            "can_delete_comment": True,
            "added_by": {
                "zpuid": "139655000000057003",
                "full_name": "Jennie Deva",
                "name": "Jennie",
                "last_name": "Deva",
                "id": 73746290,
                "is_client_user": False,
                "first_name": "Jennie",
                "email": "jenniedev@yahoo.com",
            },
            "added_via": "Projects",
            "comment": "\n"
            "Great work on resolving this issue quickly. The missing dependency was a critical "
            "oversight, but the prompt investigation and fix have ensured that our deployment schedule "
            "remains on track.\n",
            "id": "139655000000505161",
            "last_modified_by": {
                "zpuid": "139655000000057003",
                "full_name": "Jennie Deva",
                "name": "Jennie",
                "last_name": "Deva",
                "id": 73746290,
                "is_client_user": False,
                "first_name": "Jennie",
                "email": "jenniedev@yahoo.com",
            },
        }
    ]
}

# seed 001:13626 "Get All Users" sample response
PROJECT_USERS = {
    "page_info": {"per_page": "100", "has_next_page": "false", "count": "51", "page": "1"},
    "users": [
        {
            "added_time": "2024-02-08T17:06:04.860Z",
            "is_active": True,
            "role": {"name": "Administrator", "id": "103368000000048005", "type": "1"},
            "time_of_request": "1969-12-31T23:59:59.999Z",
            "is_confirmed": False,
            "profile": {"name": "Admin", "id": "103368000000048355", "type": "2", "is_default": True},
            "last_name": "Hemsworth",
            "reporting_to": {
                "full_name": "Monica Hemsworth",
                "last_name": "Hemsworth",
                "id": "103368000000048003",
                "first_name": "Monica",
                "zuid": "66295825",
            },
            "display_name": "Monica",
            "full_name": "Monica Hemsworth",
            "user_type": "1",
            "id": "103368000002316003",
            "invoice": "0.000",
            "first_name": "Monica",
            "email": "monica.hemsworth@zylker.com",
            "status": "1",
            "budget": {"rate_per_hour": "0.000", "cost_per_hour": "0.000", "type": "none"},
        }
    ],
}

# seed 001:13661 "Get Project User Details" sample response
PROJECT_USER = {
    "updated_time": "2024-05-10T07:39:15.862Z",
    "added_time": "2024-05-10T07:39:14.876Z",
    "is_active": "true",
    "role": {"name": "Administrator", "id": "103368000000048005", "type": "1"},
    "deactivated_by": "Monica Hemsworth",
    "time_of_request": "1969-12-31T23:59:59.999Z",
    "is_confirmed": "false",
    "profile": {"name": "Contractor", "id": "103368000000048364", "type": "8", "is_default": "true"},
    "last_name": "Hemsworth",
    "reporting_to": {
        "full_name": "Monica Hemsworth",
        "last_name": "Hemsworth",
        "id": "103368000000048003",
        "first_name": "Monica",
        "zuid": "66295825",
    },
    "display_name": "Monica",
    "zuid": "69014231",
    "full_name": "Monica Hemsworth",
    "user_type": "1",
    "id": "103368000002484141",
    "invoice": "0.000",
    "first_name": "Monica",
    "email": "monica.hemsworth@zylker.com",
    "status": "1",
    "budget": {"rate_per_hour": "0.000", "cost_per_hour": "0.000", "type": "none"},
}

# seed 001:16991 "Get Field Info for a Module" sample response
MODULE_FIELDS = {
    "fields": [
        {
            "api_name": "teams",
            "id": "4000000000173",
            "display_name": "zp.groups.associatedteams",
            "type": "teampicklist",
        }
    ]
}

# seed 001:39-125 error shapes: INVALID_OAUTHTOKEN comes with HTTP 400 (lines 76-84)
INVALID_OAUTHTOKEN = {
    "error": {
        "status_code": "400",
        "instance": "/api/v3/portal/15403665/projects/6000000030017/forums",
        "title": "INVALID_OAUTHTOKEN",
        "error_type": "FIELDS_VALIDATION_ERROR",
        "details": [{"message": "Invalid OAuth access token."}],
    }
}

# Seed 000 (Zoho BugTracker): "Example - Create Bug" **Response** (line 286) and "Error Response Format" (872).
BT_BUG_CREATED = {
    "bugs": [
        {
            "id": 123456000000234567,
            "title": "App crashes on login with invalid credentials",
            "description": "When entering invalid credentials on the login screen, the app crashes instead of showing "
            "an error message.",
            "key": "MOBILE-127",
            "priority": "High",
            "severity": "Critical",
            "status": "Open",
            "flag": "Bug",
            "reproducible": "Always",
            "classification": {"id": 123456000000345678, "name": "Login"},
            "module": {"id": 123456000000456789, "name": "Authentication"},
            "affected_version": "2.1.0",
            "assignee": {"id": 123456000000098765, "name": "Jane Smith", "email": "jane@company.com"},
            "reporter": {"id": 123456000000098766, "name": "John Doe", "email": "john@company.com"},
            "due_date": "2025-01-25",
            "created_time": "2025-01-15T10:30:00Z",
            "modified_time": "2025-01-15T10:30:00Z",
        }
    ]
}

BT_ERROR = {
    "code": 6008,
    "message": "Validation Failed",
    "details": {"field": "title", "error": "Title is required and cannot be empty"},
}
